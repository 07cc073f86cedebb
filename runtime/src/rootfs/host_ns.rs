//! A container without a mount namespace of its own: its root is prepared
//! in the runtime's mount namespace, as runc prepares it (libcontainer's
//! `prepareRootfs` runs whether or not there is a mount namespace, then
//! `chroot` stands in for `pivot_root`). The rootfs is bound onto itself,
//! the config's mounts are made under it, and the init chroots into it.
//! What is mounted stays mounted after the container is gone, as with runc:
//! tools that run such containers unmount the rootfs afterwards.
//!
//! Unlike runc, the host's existing mounts keep their propagation (runc
//! makes the host's `/` rslave and the rootfs's parent mount private); only
//! the new bind is made a slave, so the container's mounts under it do not
//! propagate back into the host's tree.

use std::path::Path;

use nix::mount::MsFlags;

use super::{do_mount, RootfsError};

/// Binds the rootfs onto itself, recursively, so that it is a mount point of
/// its own, and keeps what is mounted under it from propagating out.
pub fn bind_root(rootfs: &Path) -> Result<(), RootfsError> {
    do_mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    do_mount(
        None,
        rootfs,
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
}

/// Makes the rootfs our root with chroot: there is no mount namespace in
/// which to pivot (a `pivot_root` or an `MS_MOVE` here would change the
/// host's root).
pub fn chroot_root(rootfs: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot {
        root: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::chdir(rootfs).map_err(err)?;
    nix::unistd::chroot(".").map_err(err)?;
    nix::unistd::chdir("/").map_err(err)
}
