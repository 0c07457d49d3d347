//! Change notices for folders: a watcher blocks until the system (inotify) reports a change
//! it cares about in one of its folders, or a timeout passes. Callers look at the files
//! again after each wait, so a notice only has to say "something may have changed"; the
//! timeout bounds what a lost notice can cost.

use inotify::{EventMask, Inotify, WatchMask};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// One change notice: what happened (`mask`) to which entry of a watched folder (`name`;
/// `None` when it is about the folder itself).
pub type Notice<'a> = inotify::Event<&'a OsStr>;

/// Change notices for a set of folders.
pub struct Notices {
    inotify: Inotify,
    buffer: Vec<u8>,
}

impl Notices {
    /// What can change a file's content: a write finished, a rename in or out, a creation, a
    /// removal, a touch or a symlink swapped (`ATTRIB`), and the folder itself removed or
    /// moved.
    const MASK: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::ATTRIB)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);

    /// A watcher with no folders yet; an error when the system gives no change notices.
    pub fn new() -> io::Result<Notices> {
        Ok(Notices {
            inotify: Inotify::init()?,
            buffer: vec![0; 16 * 1024],
        })
    }

    /// Watches `folders` (a folder watched already keeps its one watch). A folder that
    /// cannot be watched (e.g. not made yet) is logged at debug level and skipped.
    pub fn watch<P: AsRef<Path>>(&self, folders: impl IntoIterator<Item = P>) {
        for folder in folders {
            let folder = folder.as_ref();
            if let Err(e) = self.inotify.watches().add(folder, Self::MASK) {
                tracing::debug!("not watching {} for changes: {e}", folder.display());
            }
        }
    }

    /// Waits up to `timeout` for a notice that `relevant` accepts, reading every notice
    /// pending then. True when one came, false when the time ran out.
    pub fn wait(
        &mut self,
        timeout: Duration,
        relevant: impl Fn(&Notice) -> bool,
    ) -> io::Result<bool> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(ms))? == 0 {
                return Ok(false);
            }
            let events = self.inotify.read_events(&mut self.buffer)?;
            if events.into_iter().any(|e| relevant(&e)) {
                while self
                    .inotify
                    .read_events(&mut self.buffer)
                    .is_ok_and(|e| e.count() > 0)
                {}
                return Ok(true);
            }
        }
    }
}

/// Whether a notice is about a folder (made, removed or renamed) or the watched folder itself.
pub fn about_a_folder(notice: &Notice) -> bool {
    notice.mask.contains(EventMask::ISDIR) || notice.name.is_none()
}

/// Whether a notice is about the file called `name`, or a folder (see [`about_a_folder`]).
pub fn about(notice: &Notice, name: &str) -> bool {
    about_a_folder(notice) || notice.name == Some(OsStr::new(name))
}

/// Whether a notice may change what a file holds: anything but a new file's creation (a
/// new file is read when its writer closes it, not empty or half-written).
pub fn changes_content(notice: &Notice) -> bool {
    !notice.mask.contains(EventMask::CREATE) || notice.mask.contains(EventMask::ISDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_into_a_watched_folder_wakes_a_waiter_and_other_names_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut notices = Notices::new().unwrap();
        notices.watch([dir.path()]);
        let wanted = |n: &Notice| about(n, "state.json");

        // Nothing happened: the wait runs out.
        let started = Instant::now();
        assert!(!notices.wait(Duration::from_millis(50), wanted).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(50));

        // Another file is written: not relevant, the wait still runs out.
        std::fs::write(dir.path().join("other.json"), "{}").unwrap();
        assert!(!notices.wait(Duration::from_millis(50), wanted).unwrap());

        // The file of interest arrives by rename, as atomic writers do: a waiter wakes at
        // once, long before its timeout.
        std::fs::write(dir.path().join(".tmp"), "{}").unwrap();
        std::fs::rename(dir.path().join(".tmp"), dir.path().join("state.json")).unwrap();
        let started = Instant::now();
        assert!(notices.wait(Duration::from_secs(10), wanted).unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));

        // Everything pending was read: the next wait runs out again.
        assert!(!notices.wait(Duration::from_millis(50), wanted).unwrap());
    }

    #[test]
    fn a_new_file_counts_when_written_not_when_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut notices = Notices::new().unwrap();
        notices.watch([dir.path()]);
        let file = std::fs::File::create(dir.path().join("a.yaml")).unwrap();
        assert!(!notices
            .wait(Duration::from_millis(50), changes_content)
            .unwrap());
        drop(file); // closing the written file
        assert!(notices
            .wait(Duration::from_secs(10), changes_content)
            .unwrap());
    }

    #[test]
    fn a_removed_folder_is_a_notice() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("nodes");
        std::fs::create_dir(&sub).unwrap();
        let mut notices = Notices::new().unwrap();
        notices.watch([sub.as_path()]);
        std::fs::remove_dir(&sub).unwrap();
        assert!(notices
            .wait(Duration::from_secs(10), about_a_folder)
            .unwrap());
    }
}
