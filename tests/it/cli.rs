//! The `headway` CLI end to end (written after the CLI lands).
