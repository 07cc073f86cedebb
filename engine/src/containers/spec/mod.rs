//! A container's OCI runtime spec, built from its image config and Docker's
//! Config and HostConfig.
