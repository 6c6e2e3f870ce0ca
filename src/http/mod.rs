//! The public HTTP router.
