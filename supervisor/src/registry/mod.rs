//! Registry access over the OCI distribution spec.
