//! Pod IP reservations on disk, in the CNI host-local plugin's layout.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::{from_u128, to_u128, Allocation, IpamError, Range};

/// The lock file in the network directory.
const LOCK_FILE: &str = "lock";
/// Prefix of the per-range round-robin position files.
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Separator of container ID and interface name in a reservation file.
const LINE_BREAK: &str = "\r\n";
/// How many candidates one allocation examines at most in one range.
pub const MAX_WALK: u128 = 65536;

/// Persistent pod IP reservations with the semantics of the CNI host-local plugin.
///
/// `data_dir/<network>/` holds one file per reserved IP (file name = the IP's text form,
/// content `"<containerID>\r\n<ifname>"` exactly like host-local), `last_reserved_ip.<range
/// index>` files and a `lock` file. Every operation opens `lock` anew and holds an exclusive
/// `flock` on it, so operations exclude each other across processes and across threads, even
/// when they share one store.
#[derive(Clone, Debug)]
pub struct HostLocalStore {
    dir: PathBuf,
}

/// Who holds a reservation.
struct Holder {
    container_id: String,
    /// `None` for host-local's old format, which held only the container ID.
    ifname: Option<String>,
}

impl Holder {
    fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id.trim()
            && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

/// One reservation file.
struct Reservation {
    ip: IpAddr,
    path: PathBuf,
    /// The holder, or why the content cannot be read as one.
    holder: Result<Holder, String>,
}

impl Reservation {
    fn is_held_by(&self, container_id: &str, ifname: &str) -> bool {
        self.holder
            .as_ref()
            .is_ok_and(|h| h.is(container_id, ifname))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, IpamError> {
    let invalid = |reason| IpamError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(trimmed)
}

/// Checks an attachment's names; returns the container ID as stored (trimmed, like host-local).
fn check_attachment<'a>(container_id: &'a str, ifname: &str) -> Result<&'a str, IpamError> {
    let id = check_name("container ID", container_id)?;
    check_name("interface name", ifname)?;
    if ifname.contains(char::is_whitespace) {
        return Err(IpamError::InvalidName {
            what: "interface name",
            name: ifname.to_string(),
            reason: "must not contain white space",
        });
    }
    Ok(id)
}

fn parse_holder(bytes: &[u8]) -> Result<Holder, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "not UTF-8".to_string())?
        .trim();
    if text.is_empty() {
        return Err("empty".into());
    }
    Ok(match text.split_once(LINE_BREAK) {
        Some((id, ifname)) => Holder {
            container_id: id.to_string(),
            ifname: Some(ifname.to_string()),
        },
        None => Holder {
            container_id: text.to_string(),
            ifname: None,
        },
    })
}

impl HostLocalStore {
    /// Opens (creating it if needed) the store of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, IpamError> {
        let name = check_name("network name", network)?;
        if name != network || network.contains('/') || network == "." || network == ".." {
            return Err(IpamError::InvalidName {
                what: "network name",
                name: network.to_string(),
                reason: "must be a single path component",
            });
        }
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Self { dir })
    }

    /// The network's directory (`data_dir/<network>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One IP from each range (one per family), all or nothing: on failure nothing stays
    /// reserved and no `last_reserved_ip` file changes.
    ///
    /// If the attachment already holds an IP in a range's subnet, that one is returned
    /// (idempotent ADD). Otherwise the search starts after `last_reserved_ip.<index>` and wraps
    /// (round robin), so a released IP is not handed out again at once. The network address,
    /// the IPv4 broadcast address and the gateway are skipped; `rangeStart`/`rangeEnd` are
    /// honoured. In a range of more than [`MAX_WALK`] candidates (say a /64) only `MAX_WALK`
    /// candidates from the start point are examined before reporting
    /// [`IpamError::Exhausted`], so the walk is bounded.
    pub fn allocate(
        &self,
        container_id: &str,
        ifname: &str,
        ranges: &[Range],
    ) -> Result<Vec<Allocation>, IpamError> {
        let id = check_attachment(container_id, ifname)?;
        for range in ranges {
            range.validate()?;
        }
        let _lock = self.lock()?;
        let existing = self.scan()?;
        let mut taken: HashSet<IpAddr> = existing.iter().map(|r| r.ip).collect();
        let mut held: Vec<IpAddr> = existing
            .iter()
            .filter(|r| r.is_held_by(id, ifname))
            .map(|r| r.ip)
            .collect();
        let mut created = Vec::new();
        let result = self.allocate_locked(id, ifname, ranges, &mut taken, &mut held, &mut created);
        if result.is_err() {
            for path in &created {
                let _ = fs::remove_file(path);
            }
        }
        result
    }

    fn allocate_locked(
        &self,
        id: &str,
        ifname: &str,
        ranges: &[Range],
        taken: &mut HashSet<IpAddr>,
        held: &mut Vec<IpAddr>,
        created: &mut Vec<PathBuf>,
    ) -> Result<Vec<Allocation>, IpamError> {
        let mut out = Vec::with_capacity(ranges.len());
        let mut new_last = Vec::new();
        for (index, range) in ranges.iter().enumerate() {
            let ip = match held.iter().position(|ip| range.subnet.contains(ip)) {
                Some(pos) => held.remove(pos),
                None => loop {
                    let ip = self.next_free(index, range, taken)?;
                    taken.insert(ip);
                    if let Some(path) = self.create_reservation(ip, id, ifname)? {
                        created.push(path);
                        new_last.push((index, ip));
                        break ip;
                    }
                },
            };
            out.push(allocation(range, ip));
        }
        for (index, ip) in new_last {
            self.write_last_reserved(index, ip)?;
        }
        Ok(out)
    }

    /// Reserves the given address (host-local's requested `ips`) from the range that offers it.
    /// Reserving an address the attachment already holds is fine; one held by another
    /// attachment, or the gateway, is [`IpamError::AlreadyAllocated`].
    pub fn reserve(
        &self,
        container_id: &str,
        ifname: &str,
        ip: IpAddr,
        ranges: &[Range],
    ) -> Result<Allocation, IpamError> {
        let id = check_attachment(container_id, ifname)?;
        for range in ranges {
            range.validate()?;
        }
        let not_in_range = || IpamError::NotInRange {
            addr: ip.to_string(),
            range: ranges
                .iter()
                .map(Range::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        };
        if let Some(range) = ranges
            .iter()
            .find(|r| r.gateway_or_default() == ip && r.subnet.contains(&ip))
        {
            return Err(IpamError::AlreadyAllocated {
                addr: ip.to_string(),
                owner: format!("the gateway of {range}"),
            });
        }
        let (index, range) = ranges
            .iter()
            .enumerate()
            .find(|(_, r)| r.contains(ip))
            .ok_or_else(not_in_range)?;
        let _lock = self.lock()?;
        if let Some(existing) = self.scan()?.into_iter().find(|r| r.ip == ip) {
            return match existing.holder {
                Ok(h) if h.is(id, ifname) => Ok(allocation(range, ip)),
                Ok(h) => Err(IpamError::AlreadyAllocated {
                    addr: ip.to_string(),
                    owner: format!("{}/{}", h.container_id, h.ifname.unwrap_or_default()),
                }),
                Err(reason) => Err(IpamError::Corrupt {
                    path: existing.path,
                    reason,
                }),
            };
        }
        let Some(path) = self.create_reservation(ip, id, ifname)? else {
            return Err(IpamError::AlreadyAllocated {
                addr: ip.to_string(),
                owner: "another attachment".into(),
            });
        };
        if let Err(e) = self.write_last_reserved(index, ip) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(allocation(range, ip))
    }

    /// Releases all IPs of the attachment; releasing twice or an unknown attachment is Ok.
    /// Returns the released IPs, sorted.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let id = check_attachment(container_id, ifname)?;
        let _lock = self.lock()?;
        self.remove_where(|r| r.is_held_by(id, ifname))
    }

    /// IPs held by the attachment (for CNI CHECK), sorted.
    pub fn get(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let id = check_attachment(container_id, ifname)?;
        let _lock = self.lock()?;
        let mut ips: Vec<IpAddr> = self
            .scan()?
            .into_iter()
            .filter(|r| r.is_held_by(id, ifname))
            .map(|r| r.ip)
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// All reservations as (ip, container_id, ifname), sorted by IP; the interface name is
    /// empty for host-local's old format. A file whose content is unreadable is
    /// [`IpamError::Corrupt`].
    pub fn list(&self) -> Result<Vec<(IpAddr, String, String)>, IpamError> {
        let _lock = self.lock()?;
        let mut out = Vec::new();
        for r in self.scan()? {
            let h = r.holder.map_err(|reason| IpamError::Corrupt {
                path: r.path,
                reason,
            })?;
            out.push((r.ip, h.container_id, h.ifname.unwrap_or_default()));
        }
        out.sort();
        Ok(out)
    }

    /// CNI GC: removes every reservation whose (container_id, ifname) is not in `valid`
    /// (unreadable reservation files belong to no valid attachment and go too); returns the
    /// removed IPs, sorted.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<IpAddr>, IpamError> {
        let _lock = self.lock()?;
        self.remove_where(|r| !valid.iter().any(|(id, ifname)| r.is_held_by(id, ifname)))
    }

    /// Takes the exclusive lock on a freshly opened `lock` file (its own open file
    /// description, so threads of one process exclude each other too).
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(locked) => return Ok(locked),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(IpamError::Io {
                        path,
                        source: errno.into(),
                    })
                }
            }
        }
    }

    /// Every reservation file (files named by an IP address).
    fn scan(&self) -> Result<Vec<Reservation>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            out.push(Reservation {
                ip,
                path,
                holder: parse_holder(&bytes),
            });
        }
        Ok(out)
    }

    fn remove_where(&self, pred: impl Fn(&Reservation) -> bool) -> Result<Vec<IpAddr>, IpamError> {
        let mut removed = Vec::new();
        for r in self.scan()?.into_iter().filter(|r| pred(r)) {
            match fs::remove_file(&r.path) {
                Ok(()) => removed.push(r.ip),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&r.path)(e)),
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// The first free candidate of `range` after its last reserved IP, wrapping; bounded by
    /// [`MAX_WALK`].
    fn next_free(
        &self,
        index: usize,
        range: &Range,
        taken: &HashSet<IpAddr>,
    ) -> Result<IpAddr, IpamError> {
        let v4 = range.is_ipv4();
        let (first, last) = range.bounds();
        let gateway = range.gateway_or_default();
        let mut candidate = match self.read_last_reserved(index) {
            Some(ip) if ip.is_ipv4() == v4 && (first..last).contains(&to_u128(ip)) => {
                to_u128(ip) + 1
            }
            _ => first,
        };
        let steps = (last - first).saturating_add(1).min(MAX_WALK);
        for _ in 0..steps {
            let ip = from_u128(candidate, v4);
            if ip != gateway && !taken.contains(&ip) {
                return Ok(ip);
            }
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
        }
        Err(IpamError::Exhausted {
            range: range.to_string(),
        })
    }

    /// Creates the reservation file with O_EXCL; `None` if it already exists.
    fn create_reservation(
        &self,
        ip: IpAddr,
        id: &str,
        ifname: &str,
    ) -> Result<Option<PathBuf>, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let written = file
            .write_all(format!("{id}{LINE_BREAK}{ifname}").as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path)(e));
        }
        Ok(Some(path))
    }

    fn last_reserved_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{index}"))
    }

    /// The last reserved IP of range `index`; a missing or unreadable file is only a lost hint.
    fn read_last_reserved(&self, index: usize) -> Option<IpAddr> {
        fs::read_to_string(self.last_reserved_path(index))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn write_last_reserved(&self, index: usize, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.last_reserved_path(index);
        fs::write(&path, ip.to_string()).map_err(io_err(&path))
    }
}

fn allocation(range: &Range, ip: IpAddr) -> Allocation {
    Allocation {
        address: IpNet::new(ip, range.subnet.prefix_len()).expect("prefix of the subnet's family"),
        gateway: range.gateway_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_formats() {
        let h = parse_holder(b"abc\r\neth0").unwrap();
        assert_eq!(
            (h.container_id.as_str(), h.ifname.as_deref()),
            ("abc", Some("eth0"))
        );
        assert!(
            h.is("abc", "eth0")
                && h.is(" abc\n", "eth0")
                && !h.is("abc", "eth1")
                && !h.is("abd", "eth0")
        );
        let old = parse_holder(b"abc\n").unwrap();
        assert_eq!(old.ifname, None);
        assert!(old.is("abc", "eth0") && old.is("abc", "net1") && !old.is("x", "eth0"));
        assert_eq!(parse_holder(b"  ").err().unwrap(), "empty");
        assert_eq!(parse_holder(&[0xff, 0xfe]).err().unwrap(), "not UTF-8");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_attachment(" c1 ", "eth0").unwrap(), "c1");
        assert!(check_attachment("", "eth0").is_err());
        assert!(check_attachment("a\r\nb", "eth0").is_err());
        assert!(check_attachment("c1", "").is_err());
        assert!(check_attachment("c1", "eth 0").is_err());
        assert!(check_attachment("c1", " eth0").is_err());
    }
}
