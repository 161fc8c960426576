//! Error type: every error names the step, the object and (when known) the netns.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use nix::errno::Errno;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification so callers can be idempotent without matching errno values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Object does not exist (ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL).
    NotFound,
    /// Object already exists (EEXIST).
    AlreadyExists,
    /// Kernel lacks the feature, e.g. a missing link-type module (EOPNOTSUPP).
    NotSupported,
    /// Not permitted (EPERM, EACCES): usually "not running as root".
    PermissionDenied,
    /// Bad argument, rejected locally or by the kernel (EINVAL, ERANGE).
    InvalidInput,
    /// Object is busy, e.g. renaming a link that is up (EBUSY).
    Busy,
    /// The closure run inside a netns panicked.
    Panicked,
    /// A wait (e.g. for a link to come up) ran out of time.
    TimedOut,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classifies an errno value.
    pub fn from_errno(errno: i32) -> Self {
        match Errno::from_raw(errno) {
            Errno::ENOENT | Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL | Errno::ENXIO => {
                ErrorKind::NotFound
            }
            Errno::EEXIST => ErrorKind::AlreadyExists,
            Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT => {
                ErrorKind::NotSupported
            }
            Errno::EPERM | Errno::EACCES => ErrorKind::PermissionDenied,
            Errno::EINVAL | Errno::ERANGE => ErrorKind::InvalidInput,
            Errno::EBUSY => ErrorKind::Busy,
            Errno::ETIMEDOUT => ErrorKind::TimedOut,
            _ => ErrorKind::Other,
        }
    }
}

/// What went wrong underneath.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// An OS error (errno), displayed like `File exists (os error 17)`.
    #[error("{0}")]
    Os(io::Error),
    /// A netlink failure that carries no errno (decode error, unexpected reply...).
    #[error("{0}")]
    Netlink(rtnetlink::Error),
    /// A locally detected problem.
    #[error("{0}")]
    Message(String),
}

/// A failed step, e.g. `create veth tap1234 <-> eth0 in /var/run/netns/x: File exists (os error 17)`.
#[derive(thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<Inner>);

/// Debug shows the message (what `expect`/`unwrap` print) plus the kind.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{:?}]", self.0, self.0.kind)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {object}{}: {cause}", ns_suffix(.netns))]
struct Inner {
    op: Cow<'static, str>,
    object: String,
    netns: Option<Arc<str>>,
    kind: ErrorKind,
    cause: Cause,
}

fn ns_suffix(netns: &Option<Arc<str>>) -> String {
    match netns {
        Some(ns) => format!(" in {ns}"),
        None => String::new(),
    }
}

impl Error {
    /// Builds an error; the netns defaults to the one the current thread was put in by `Netns::run`.
    pub(crate) fn new(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        kind: ErrorKind,
        cause: Cause,
    ) -> Self {
        Error(Box::new(Inner {
            op: op.into(),
            object: object.into(),
            netns: crate::netns::current_label(),
            kind,
            cause,
        }))
    }

    /// OS error from an errno.
    pub(crate) fn errno(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        errno: Errno,
    ) -> Self {
        Self::io(op, object, io::Error::from_raw_os_error(errno as i32))
    }

    /// OS error from an `io::Error`.
    pub(crate) fn io(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        err: io::Error,
    ) -> Self {
        let kind = match err.raw_os_error() {
            Some(code) => ErrorKind::from_errno(code),
            None => match err.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                io::ErrorKind::Unsupported => ErrorKind::NotSupported,
                _ => ErrorKind::Other,
            },
        };
        Self::new(op, object, kind, Cause::Os(err))
    }

    /// Netlink error; an embedded errno becomes an OS error.
    pub(crate) fn netlink(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        err: rtnetlink::Error,
    ) -> Self {
        if let rtnetlink::Error::NetlinkError(msg) = &err {
            if let Some(code) = msg.code {
                let errno = code.get().checked_neg().unwrap_or(code.get());
                return Self::io(op, object, io::Error::from_raw_os_error(errno));
            }
        }
        Self::new(op, object, ErrorKind::Other, Cause::Netlink(err))
    }

    /// Argument rejected before reaching the kernel.
    pub(crate) fn invalid(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self::new(
            op,
            object,
            ErrorKind::InvalidInput,
            Cause::Message(why.into()),
        )
    }

    /// Other locally detected failure.
    pub(crate) fn other(
        op: impl Into<Cow<'static, str>>,
        object: impl Into<String>,
        kind: ErrorKind,
        why: impl Into<String>,
    ) -> Self {
        Self::new(op, object, kind, Cause::Message(why.into()))
    }

    /// Overrides the netns label (used where the thread-local label is not the relevant one).
    pub(crate) fn in_netns(mut self, netns: Option<Arc<str>>) -> Self {
        self.0.netns = netns;
        self
    }

    /// Classification.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// True for ENOENT/ENODEV/ESRCH/EADDRNOTAVAIL-like failures.
    pub fn is_not_found(&self) -> bool {
        self.0.kind == ErrorKind::NotFound
    }
    /// True for EEXIST.
    pub fn is_already_exists(&self) -> bool {
        self.0.kind == ErrorKind::AlreadyExists
    }
    /// True when the kernel lacks the feature (EOPNOTSUPP).
    pub fn is_not_supported(&self) -> bool {
        self.0.kind == ErrorKind::NotSupported
    }
    /// The step, e.g. `create veth`.
    pub fn op(&self) -> &str {
        &self.0.op
    }
    /// The object, e.g. `tap1234 <-> eth0`.
    pub fn object(&self) -> &str {
        &self.0.object
    }
    /// The netns the step ran in, if known.
    pub fn netns(&self) -> Option<&str> {
        self.0.netns.as_deref()
    }
    /// Underlying cause.
    pub fn cause(&self) -> &Cause {
        &self.0.cause
    }
    /// The errno, if the cause is an OS error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.0.cause {
            Cause::Os(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_step_object_netns_and_errno() {
        let e = Error::errno("create veth", "tap1234 <-> eth0", Errno::EEXIST)
            .in_netns(Some(Arc::from("/var/run/netns/x")));
        assert_eq!(
            e.to_string(),
            "create veth tap1234 <-> eth0 in /var/run/netns/x: File exists (os error 17)"
        );
        assert!(e.is_already_exists());
        assert_eq!(e.raw_os_error(), Some(17));
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
        assert!(std::mem::size_of::<Error>() <= std::mem::size_of::<usize>());
    }

    #[test]
    fn errno_classification() {
        assert_eq!(ErrorKind::from_errno(libc::ENODEV), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_errno(libc::ENOENT), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_errno(libc::ESRCH), ErrorKind::NotFound);
        assert_eq!(
            ErrorKind::from_errno(libc::EEXIST),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            ErrorKind::from_errno(libc::EOPNOTSUPP),
            ErrorKind::NotSupported
        );
        assert_eq!(
            ErrorKind::from_errno(libc::EPERM),
            ErrorKind::PermissionDenied
        );
        assert_eq!(ErrorKind::from_errno(libc::EBUSY), ErrorKind::Busy);
        assert_eq!(ErrorKind::from_errno(libc::EIO), ErrorKind::Other);
    }

    #[test]
    fn netlink_errno_is_unwrapped() {
        let mut msg = netlink_packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-libc::ENODEV);
        let e =
            Error::netlink("get link", "eth9", rtnetlink::Error::NetlinkError(msg)).in_netns(None);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "get link eth9: No such device (os error 19)");
    }
}
