//! Images as Docker shows them: names resolved as Docker resolves them
//! (`busybox` is `docker.io/library/busybox:latest`, an id prefix names the
//! image with that config digest), the image config read from the content
//! store, pulls and pushes with Docker's progress.
