//! Layer archives: apply a layer tar into a snapshot directory, and turn a snapshot's changes into a layer tar.
