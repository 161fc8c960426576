//! Network namespaces: open by path, create/delete named ones, run code inside one.
//!
//! Work inside a netns always happens on a dedicated OS thread that `setns()`s into it and
//! exits afterwards, so no thread (in particular no tokio worker) ever keeps foreign netns state.

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{fstat, Mode};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::{Error, ErrorKind, Result};
use crate::netlink::Netlink;

/// Where named namespaces live (`ip netns` compatible; `/var/run` links here on Debian).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Serializes the one-time "make /run/netns a shared mount point" dance within this process.
static RUN_DIR_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// Label of the netns this thread was moved into by [`Netns::run`], for error messages.
    static CURRENT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Label of the netns the current thread runs in, if it is a [`Netns::run`] thread.
pub(crate) fn current_label() -> Option<Arc<str>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// An open network namespace (an owned fd on an nsfs file). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Netns {
    fd: Arc<OwnedFd>,
    label: Arc<str>,
}

/// Alias kept for readers coming from the Python code base.
pub type NetnsHandle = Netns;

impl Netns {
    /// Opens a netns file such as `/proc/PID/ns/net` or `/var/run/netns/NAME`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let label: Arc<str> = Arc::from(path.display().to_string());
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::errno("open netns", &*label, e).in_netns(None))?;
        let fs = fstatfs(&fd).map_err(|e| Error::errno("stat netns", &*label, e).in_netns(None))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(
                Error::invalid("open netns", &*label, "not a namespace file (nsfs)").in_netns(None),
            );
        }
        tracing::debug!(netns = %label, "opened netns");
        Ok(Netns {
            fd: Arc::new(fd),
            label,
        })
    }

    /// Opens `/run/netns/NAME`.
    pub fn open_named(name: &str) -> Result<Self> {
        validate_ns_name("open netns", name)?;
        Self::open(named_path(name))
    }

    /// Opens the netns of process `pid`.
    pub fn for_pid(pid: u32) -> Result<Self> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// Opens the netns of the calling thread.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Creates `/run/netns/NAME` holding a fresh netns (like `ip netns add`).
    ///
    /// Fails with [`ErrorKind::AlreadyExists`] if the name is taken.
    pub fn create_named(name: &str) -> Result<Self> {
        validate_ns_name("create netns", name)?;
        let path = named_path(name);
        let object = path.display().to_string();
        {
            let _guard = RUN_DIR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            ensure_run_dir_shared()?;
        }
        // Mount point file; O_EXCL gives us the "already exists" answer atomically.
        let placeholder = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::errno("create netns", &*object, e).in_netns(None))?;
        drop(placeholder);

        // unshare() only affects the calling thread, which then exits: the bind mount keeps
        // the new netns alive.
        let res = std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("netns-create".into())
                .spawn_scoped(s, || -> Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::errno("unshare netns for", &*object, e).in_netns(None)
                    })?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        Some("none"),
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| Error::errno("bind mount netns", &*object, e).in_netns(None))
                })
                .map_err(|e| {
                    Error::io("spawn thread to create netns", &*object, e).in_netns(None)
                })?;
            handle
                .join()
                .map_err(|p| panicked("create netns", &object, p))?
        });
        if let Err(e) = res {
            let _ = nix::unistd::unlink(&path);
            return Err(e);
        }
        tracing::debug!(netns = %object, "created netns");
        Self::open(&path)
    }

    /// Deletes `/run/netns/NAME` (like `ip netns del`). Returns `Ok(false)` if it did not exist.
    pub fn delete_named(name: &str) -> Result<bool> {
        validate_ns_name("delete netns", name)?;
        let path = named_path(name);
        let object = path.display().to_string();
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("delete netns", object, e).in_netns(None)),
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (leftover placeholder); still remove the file.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::errno("unmount netns", object, e).in_netns(None)),
        }
        match nix::unistd::unlink(&path) {
            Ok(()) => {
                tracing::debug!(netns = %object, "deleted netns");
                Ok(true)
            }
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::errno("delete netns", object, e).in_netns(None)),
        }
    }

    /// The path this netns was opened from (used in error messages).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Namespace identity `(st_dev, st_ino)`; equal ids mean the same netns.
    pub fn id(&self) -> Result<(u64, u64)> {
        let st = fstat(self.fd.as_fd()).map_err(|e| Error::errno("stat netns", &*self.label, e))?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Runs `f` on a dedicated OS thread that has entered this netns; returns its result.
    ///
    /// The thread exits when `f` returns. `f` may borrow from the caller. A panic in `f` becomes
    /// an [`ErrorKind::Panicked`] error. Blocking: from async code wrap it in `spawn_blocking`.
    pub fn run<F, T, E>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E> + Send,
        T: Send,
        E: From<Error> + Send,
    {
        let label = self.label.clone();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, || -> Result<T, E> {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::errno("enter netns", &*label, e).in_netns(None))?;
                    CURRENT.with(|c| *c.borrow_mut() = Some(label.clone()));
                    tracing::trace!(netns = %label, "entered netns");
                    f()
                })
                .map_err(|e| {
                    E::from(Error::io("spawn thread for netns", &*label, e).in_netns(None))
                })?;
            match handle.join() {
                Ok(r) => r,
                Err(p) => Err(E::from(panicked("run in netns", &label, p))),
            }
        })
    }

    /// Like [`run`](Self::run) for async work: the thread drives `f()` on its own
    /// current-thread tokio runtime.
    pub fn run_async<F, T, E>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce() -> Result<T, E> + Send,
        T: Send,
        E: From<Error> + Send,
    {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("build tokio runtime for", self.label.to_string(), e))?;
            rt.block_on(f())
        })
    }

    /// Opens an rtnetlink connection inside this netns and hands it to `f`.
    ///
    /// `f` is an async closure (or a closure returning a future); a non-`move` async closure
    /// may borrow from the caller:
    ///
    /// ```no_run
    /// # use kuryr_netplumb::{Netns, VethOptions};
    /// let host = Netns::current()?;
    /// let pod = Netns::open("/var/run/netns/pod")?;
    /// host.with_netlink(async |nl| {
    ///     nl.create_veth("tap1234", "eth0", Some(&pod), &VethOptions::default()).await
    /// })?;
    /// let eth0 = pod.with_netlink(async |nl| nl.link("eth0").await)?;
    /// # Ok::<(), kuryr_netplumb::Error>(())
    /// ```
    pub fn with_netlink<F, T, E>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(Netlink) -> Result<T, E> + Send,
        T: Send,
        E: From<Error> + Send,
    {
        self.run_async(async || {
            let nl = Netlink::connect()?;
            f(nl).await
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `/run/netns/NAME`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn validate_ns_name(op: &'static str, name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::invalid(op, format!("{name:?}"), "invalid netns name").in_netns(None));
    }
    Ok(())
}

/// What [`share_run_dir_in`] found and did to `/run/netns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDirSharing {
    /// It was a mount point already; it is (now) shared.
    Shared,
    /// It was no mount point: it was bound onto itself and made shared.
    MadeMountPoint,
}

/// Makes `/run/netns` a shared mount point in the mount namespace `mount_ns` (a path such as
/// `/proc/1/ns/mnt`, or the host's `/proc` mounted elsewhere: `/host_proc/1/ns/mnt`), the way
/// `ip netns add` and container runtimes do. A container that mounts `/run/netns` with
/// `HostToContainer` propagation can only start once that is so: on a host without systemd
/// (`/` private) where no network namespace was ever named, `/run/netns` is not a mount point
/// yet and the runtime refuses the container ("not a shared or slave mount").
///
/// The work runs on a dedicated thread that first stops sharing its filesystem attributes
/// with the process (`unshare(CLONE_FS)`, which `setns` into a mount namespace requires of a
/// multi-threaded process) and exits afterwards.
pub fn share_run_dir_in(mount_ns: &Path) -> Result<RunDirSharing> {
    let object = mount_ns.display().to_string();
    let ns = open(mount_ns, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::errno("open mount namespace", &*object, e).in_netns(None))?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("share-netns-dir".into())
            .spawn_scoped(s, || -> Result<RunDirSharing> {
                unshare(CloneFlags::CLONE_FS).map_err(|e| {
                    Error::errno("unshare filesystem attributes for", &*object, e).in_netns(None)
                })?;
                setns(&ns, CloneFlags::CLONE_NEWNS).map_err(|e| {
                    Error::errno("enter mount namespace", &*object, e).in_netns(None)
                })?;
                let _guard = RUN_DIR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                ensure_run_dir_shared()
            })
            .map_err(|e| Error::io("spawn thread to enter", &*object, e).in_netns(None))?
            .join()
            .map_err(|p| panicked("share /run/netns in", &object, p))?
    })
}

/// Makes /run/netns a shared mount point so netns bind mounts propagate to other mount
/// namespaces (same algorithm as iproute2's `ip netns add`).
fn ensure_run_dir_shared() -> Result<RunDirSharing> {
    let dir = Path::new(NETNS_RUN_DIR);
    match nix::unistd::mkdir(dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(Error::errno("create directory", NETNS_RUN_DIR, e).in_netns(None)),
    }
    let mut made_mount = false;
    loop {
        match mount(
            Some(""),
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) if made_mount => return Ok(RunDirSharing::MadeMountPoint),
            Ok(()) => return Ok(RunDirSharing::Shared),
            Err(Errno::EINVAL) if !made_mount => {
                // Not a mount point yet: bind it onto itself, then retry making it shared.
                // Netns files already mounted in it (by a runtime that does not make it a mount
                // point, e.g. containerd, before kuryr-daemon first ran on the node) would end
                // up under the new mount: hidden, never unmountable by their path, so the
                // runtime's unlink of them fails (EBUSY) and their pods never finish
                // terminating. They are moved onto the new mount point: held by an fd,
                // unmounted, re-bound from the fd after the bind.
                let held = detach_netns_mounts(dir);
                let bound = mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| Error::errno("bind mount", NETNS_RUN_DIR, e).in_netns(None));
                rebind_netns_mounts(held);
                bound?;
                tracing::debug!("made {NETNS_RUN_DIR} a mount point");
                made_mount = true;
            }
            Err(e) => {
                return Err(Error::errno("make shared mount", NETNS_RUN_DIR, e).in_netns(None))
            }
        }
    }
}

/// The nsfs mounts directly inside `dir` (from the calling thread's mountinfo), each opened (the fd keeps
/// its netns alive) and then lazily unmounted. What cannot be opened or unmounted is left as it
/// is and logged.
fn detach_netns_mounts(dir: &Path) -> Vec<(PathBuf, OwnedFd)> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let mut held = Vec::new();
    for path in nsfs_mounts_in(&info, dir) {
        let fd = match open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open a netns mount to move it");
                continue;
            }
        };
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) => held.push((path, fd)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot unmount a netns mount to move it")
            }
        }
    }
    held
}

/// Binds each held netns back onto its file (now under the new mount point of the directory).
fn rebind_netns_mounts(held: Vec<(PathBuf, OwnedFd)>) {
    use std::os::fd::AsRawFd;
    let n = held.len();
    for (path, fd) in held {
        let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if let Err(e) = mount(
            Some(src.as_str()),
            &path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            tracing::error!(path = %path.display(), error = %e, "cannot bind a netns back onto its file after moving it");
        }
    }
    if n > 0 {
        tracing::info!(
            count = n,
            "moved the netns mounts already in {NETNS_RUN_DIR} onto its new mount point"
        );
    }
}

/// Mount points of nsfs mounts whose parent directory is `dir` (mountinfo fields: 5th the mount
/// point, octal-escaped; after ` - ` the filesystem type).
fn nsfs_mounts_in(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "nsfs" {
                return None;
            }
            let mp = PathBuf::from(unescape_mountinfo(pre.split_whitespace().nth(4)?));
            (mp.parent() == Some(dir)).then_some(mp)
        })
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn panicked(op: &'static str, object: &str, payload: Box<dyn Any + Send>) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string());
    Error::other(
        op,
        object,
        ErrorKind::Panicked,
        format!("thread panicked: {msg}"),
    )
    .in_netns(None)
}

#[cfg(test)]
mod run_dir_tests {
    use super::*;

    #[test]
    fn nsfs_mounts_directly_in_the_directory_are_found() {
        let info = "\
48 27 0:4 net:[4026532181] /run/netns/cni-9153 rw - nsfs nsfs rw
49 27 0:4 net:[4026532182] /run/netns/with\\040space rw - nsfs nsfs rw
50 27 0:4 net:[4026532183] /run/other/cni-x rw - nsfs nsfs rw
51 27 0:30 / /run/netns/sub rw - tmpfs tmpfs rw
52 27 0:4 net:[4026532184] /run/netns/deeper/x rw - nsfs nsfs rw";
        assert_eq!(
            nsfs_mounts_in(info, Path::new("/run/netns")),
            vec![
                PathBuf::from("/run/netns/cni-9153"),
                PathBuf::from("/run/netns/with space")
            ]
        );
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }
}
