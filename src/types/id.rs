//! Typed numeric ids, so a `NodeId` is never passed where a `UserId` belongs.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse().map($name)
            }
        }
    };
}

id_type!(
    /// Primary key of a user (a "namespace" in old Headscale vocabulary).
    UserId
);
id_type!(
    /// Primary key of a node.
    NodeId
);
id_type!(
    /// Primary key of a pre-auth key.
    PreAuthKeyId
);
id_type!(
    /// Primary key of an admin API key.
    ApiKeyId
);
id_type!(
    /// Primary key of a route (one advertised or approved prefix of one node).
    RouteId
);
id_type!(
    /// Primary key of an OAuth client of `/api/v2`.
    OAuthClientId
);
