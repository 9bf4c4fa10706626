//! Refuses writes before the disk refuses them to sled.
//!
//! sled 0.34 does not recover from a failed write (a full or read-only disk leaves it hanging
//! or failing until reopened), so the writer checks the file system before every group and
//! refuses the group with `Unavailable` while less than the configured reserve is free. The
//! affected requests fail with 503; nothing reaches sled, and writes resume once space returns.

use std::path::PathBuf;

use super::unavailable;
use crate::store::StoreError;

/// Free space kept on the store's disk by default.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

/// The data directory and the free space to keep on its file system.
pub(super) struct DiskGuard {
    pub(super) dir: PathBuf,
    pub(super) reserve_bytes: u64,
}

impl DiskGuard {
    /// `Err` when a group of about `bytes` must not be written now.
    pub(super) fn check(&self, bytes: u64) -> Result<(), StoreError> {
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| unavailable(format!("cannot inspect the data directory: {e}")))?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return Err(unavailable("the data directory is on a read-only file system"));
        }
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        // sled writes a batch to its log and later to segments: count it twice.
        if free < self.reserve_bytes + 2 * bytes {
            return Err(unavailable(format!(
                "disk almost full: {} MiB free, the store keeps {} MiB in reserve",
                free >> 20,
                self.reserve_bytes >> 20
            )));
        }
        Ok(())
    }
}
