//! TAP and TUN devices with `IFF_VNET_HDR`: every packet read or written is preceded by a
//! 10-byte `struct virtio_net_hdr` ([`wire::virtio::VirtioNetHdr`], little-endian, set with
//! `TUNSETVNETLE`), which carries checksum offload (`NEEDS_CSUM`) and segmentation offload
//! (TCP super-packets of up to 64 KiB) across the device as one unit.
//!
//! A VM's port is a TAP (Ethernet frames); the substrate is a TUN (IPv6 packets, no link
//! header). The file descriptors are non-blocking and close-on-exec, ready for
//! [`tokio::io::unix::AsyncFd`]. The device disappears when its descriptor closes (it is
//! not made persistent).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use wire::virtio::VirtioNetHdr;

/// Bytes of `virtio_net_hdr` in front of every packet (no `num_buffers`: we never merge
/// receive buffers).
pub const VNET_HDR_LEN: usize = wire::virtio::HEADER_LEN;

/// Offloads asked for with `TUNSETOFFLOAD`: checksum, and TCP segmentation over IPv4 and
/// IPv6. (ECN super-packets and UDP segmentation are left to the kernel to cut.)
pub const WANTED_OFFLOADS: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

const TUN_PATH: &CStr = c"/dev/net/tun";

/// What kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ethernet frames (a VM's port).
    Tap,
    /// IP packets without link header (the substrate).
    Tun,
}

/// An open TAP or TUN device.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    name: String,
    kind: Kind,
    offloads: u32,
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags (the rest of the union
/// is padding; 40 bytes on 64-bit Linux, 32 on 32-bit).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 24 - std::mem::size_of::<libc::c_short>()],
}

/// Checks an interface name the way the kernel will: 1 to 15 bytes, no `/`, `:` or
/// whitespace.
pub fn check_ifname(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ))
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Device {
    /// Creates (or attaches to) the TAP device `name`, with offloads.
    pub fn tap(name: &str) -> io::Result<Device> {
        Device::open(name, Kind::Tap)
    }

    /// Creates (or attaches to) the TUN device `name`, with offloads.
    pub fn tun(name: &str) -> io::Result<Device> {
        Device::open(name, Kind::Tun)
    }

    pub fn open(name: &str, kind: Kind) -> io::Result<Device> {
        Device::open_with(name, kind, WANTED_OFFLOADS)
    }

    /// Like [`open`](Self::open), asking for the offloads `want` (`0`: none, so that the
    /// kernel hands over only complete, checksummed packets of at most the MTU).
    pub fn open_with(name: &str, kind: Kind, want: u32) -> io::Result<Device> {
        Device::open_queue(name, kind, want, false)
    }

    /// Opens `n` queues of the multi-queue device `name` (`IFF_MULTI_QUEUE`), creating
    /// it if needed: one descriptor per worker, each with its own packets. The kernel
    /// hands a flow's packets to the queue that last wrote that flow, so a worker gets
    /// the answers to what it sent. A device made without multi-queue cannot be
    /// attached this way (`EINVAL`).
    pub fn open_queues(name: &str, kind: Kind, want: u32, n: usize) -> io::Result<Vec<Device>> {
        (0..n.max(1))
            .map(|_| Device::open_queue(name, kind, want, true))
            .collect()
    }

    fn open_queue(name: &str, kind: Kind, want: u32, multi_queue: bool) -> io::Result<Device> {
        check_ifname(name)?;
        // SAFETY: a valid NUL-terminated path; the result is checked.
        let raw = cvt(unsafe {
            libc::open(
                TUN_PATH.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `raw` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mode = match kind {
            Kind::Tap => libc::IFF_TAP,
            Kind::Tun => libc::IFF_TUN,
        };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (mode
                | libc::IFF_NO_PI
                | libc::IFF_VNET_HDR
                | if multi_queue {
                    libc::IFF_MULTI_QUEUE
                } else {
                    0
                }) as libc::c_short,
            _pad: [0; 24 - std::mem::size_of::<libc::c_short>()],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` is laid out
        // as (and no smaller than).
        cvt(unsafe { libc::ioctl(raw, libc::TUNSETIFF as _, &mut req as *mut IfReq) })?;
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(&req.name[..len]).into_owned();

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        cvt(unsafe { libc::ioctl(raw, libc::TUNSETVNETHDRSZ as _, &hdr_len) })?;
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads an int through the pointer.
        if let Err(e) = cvt(unsafe { libc::ioctl(raw, libc::TUNSETVNETLE as _, &le) }) {
            // Kernels without it use the host's order, which is what we want on
            // little-endian hosts.
            if cfg!(target_endian = "big") {
                return Err(e);
            }
        }
        let offloads = set_offloads(raw, want)?;
        Ok(Device {
            fd,
            name,
            kind,
            offloads,
        })
    }

    /// The interface's name (it keeps its index, not its name, when renamed or moved to
    /// another namespace; this is the name it was created with).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The `TUN_F_*` offloads the kernel accepted.
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// Makes the device outlive its descriptor (`TUNSETPERSIST`): a restarted daemon
    /// attaches to it again by name, and whatever uses it (a VM's interface, routes
    /// into it) stays as it was meanwhile. `false` lets it go with the last descriptor.
    pub fn set_persist(&self, persist: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        cvt(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETPERSIST as _,
                libc::c_ulong::from(persist),
            )
        })
        .map(drop)
    }

    /// Creates (or attaches to) a device inside the network namespace at `netns_path`
    /// (e.g. `/run/netns/vm1`), from a short-lived thread that enters it; the descriptor
    /// then works from any namespace. `setup` runs in that thread, inside the namespace,
    /// after the device is open (to configure it with `ip`, say).
    pub fn open_in_netns(
        netns_path: &std::path::Path,
        name: &str,
        kind: Kind,
        setup: impl FnOnce(&Device) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Device> {
        let ns = std::fs::File::open(netns_path)?;
        let name = name.to_string();
        std::thread::Builder::new()
            .name("canopy-netns".into())
            .spawn(move || {
                // SAFETY: setns on a descriptor we own; it changes only this thread's
                // namespace, and the thread ends right after.
                cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
                let dev = Device::open(&name, kind)?;
                setup(&dev)?;
                Ok(dev)
            })?
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Reads one packet with its `virtio_net_hdr` in front: returns the bytes read
    /// (header included). `WouldBlock` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet with the given `virtio_net_hdr` (one `writev`, no copy).
    pub fn send(&self, hdr: &VirtioNetHdr, pkt: &[u8]) -> io::Result<usize> {
        let mut h = [0u8; VNET_HDR_LEN];
        hdr.emit(&mut h)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let iov = [
            libc::iovec {
                iov_base: h.as_ptr() as *mut libc::c_void,
                iov_len: h.len(),
            },
            libc::iovec {
                iov_base: pkt.as_ptr() as *mut libc::c_void,
                iov_len: pkt.len(),
            },
        ];
        // SAFETY: both iovecs point at live, readable memory of the given lengths.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Asks for [`WANTED_OFFLOADS`], falling back to checksum only, then none.
fn set_offloads(fd: RawFd, first: u32) -> io::Result<u32> {
    let mut last = None;
    for want in [first, first & libc::TUN_F_CSUM, 0] {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        match cvt(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, want as libc::c_ulong) }) {
            Ok(_) => return Ok(want),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names() {
        assert!(check_ifname("cnpy123t1").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }
}
