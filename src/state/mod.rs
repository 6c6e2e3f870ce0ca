//! The single coordinator of users, nodes, keys and routes.
