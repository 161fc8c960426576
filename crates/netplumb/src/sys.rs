//! The crate's only `unsafe` code: the two raw syscalls nix has no safe wrapper for
//! (SIOCETHTOOL ioctl and bind() of an AF_PACKET socket). Everything else uses nix.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;

/// `struct ethtool_value` from linux/ethtool.h.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ifreq_for(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: ifreq only holds integers, byte arrays and a raw pointer in a union; the
    // all-zero bit pattern is a valid value for every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(ifr)
}

/// One SIOCETHTOOL get/set of an `ethtool_value`, in the calling thread's netns.
fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let mut val = EthtoolValue { cmd, data };
    let mut ifr = ifreq_for(ifname)?;
    ifr.ifr_ifru.ifru_data = (&mut val as *mut EthtoolValue).cast();
    // SAFETY: `sock` is a valid open socket; `ifr` is a properly initialised ifreq whose
    // name is NUL-terminated (checked length < IFNAMSIZ, zero-filled) and whose data pointer
    // points to `val`, a #[repr(C)] ethtool_value that outlives the call. The kernel reads
    // `cmd` and reads/writes `data` only.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL as _,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val.data)
}

/// Current TX checksum offload state (ETHTOOL_GTXCSUM).
pub(crate) fn tx_csum_get(ifname: &str) -> io::Result<bool> {
    ethtool_value(ifname, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

/// Sets TX checksum offload (ETHTOOL_STXCSUM).
pub(crate) fn tx_csum_set(ifname: &str, enabled: bool) -> io::Result<()> {
    ethtool_value(ifname, ETHTOOL_STXCSUM, u32::from(enabled)).map(drop)
}

/// AF_PACKET/SOCK_RAW socket bound to `ifindex` for `ethertype` (host order), in the calling
/// thread's netns. Also returns the device's hardware address as reported by the bound
/// socket (Ethernet devices only).
pub(crate) fn packet_socket(
    ifindex: u32,
    ethertype: u16,
) -> io::Result<(OwnedFd, Option<[u8; 6]>)> {
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // Protocol 0: receive nothing until bound, so no frames from other interfaces sneak in.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: sockaddr_ll is plain integers and a byte array; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `fd` is a valid AF_PACKET socket; we pass a pointer to a fully initialised
    // sockaddr_ll together with its exact size, and the kernel only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel fills only offsetof(sll_addr) + halen bytes, which nix's LinkAddr rejects,
    // hence the raw call.
    // SAFETY: all-zero is a valid sockaddr_ll (see above).
    let mut bound: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `bound` is writable storage of `len` bytes, and `len` is a valid in/out length;
    // the kernel writes at most `len` bytes and stores the used length in `len`.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut bound as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    let mac = if rc == 0 && bound.sll_halen == 6 {
        let a = bound.sll_addr;
        Some([a[0], a[1], a[2], a[3], a[4], a[5]])
    } else {
        None
    };
    Ok((fd, mac))
}
