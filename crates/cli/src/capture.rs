//! Reading pcap and pcapng captures (told apart by their magic number) and writing pcap.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Chain, Cursor, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::link::{self, LinkType};

type Source = Chain<Cursor<[u8; 4]>, File>;

/// One captured frame.
pub struct Frame<'a> {
    pub timestamp: Duration,
    pub link: LinkType,
    pub data: Cow<'a, [u8]>,
}

/// What went wrong while reading records after the file header.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file ends in the middle of a record (a capture that was cut short).
    #[error("the file ends in the middle of a record")]
    CutShort,
    #[error("interface {interface} has link type {link:?}; accepted: {accepted}", accepted = link::ACCEPTED)]
    UnsupportedLink { interface: u32, link: DataLink },
    #[error("packet refers to interface {0}, which the file does not describe")]
    UnknownInterface(u32),
    #[error(transparent)]
    Pcap(PcapError),
}

impl From<PcapError> for ReadError {
    fn from(e: PcapError) -> Self {
        match e {
            PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                ReadError::CutShort
            }
            PcapError::IncompleteBuffer => ReadError::CutShort,
            e => ReadError::Pcap(e),
        }
    }
}

/// A pcapng interface as far as reading packets is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Interface {
    link: Result<LinkType, DataLink>,
    /// `if_tsresol`: bit 7 clear = 10^-n seconds, set = 2^-n seconds. Default 6 (µs).
    tsresol: u8,
    /// `if_tsoffset`, seconds.
    tsoffset: u64,
}

pub enum CaptureReader {
    Pcap {
        reader: PcapReader<Source>,
        link: LinkType,
    },
    PcapNg {
        reader: PcapNgReader<Source>,
        interfaces: Vec<Interface>,
    },
}

const PCAP_MAGICS: [u32; 4] = [0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1];
const PCAPNG_MAGIC: u32 = 0x0a0d0d0a;

impl CaptureReader {
    /// Opens a pcap or pcapng file. Errors name the file and say what is wrong with it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut file = File::open(path).context("cannot open it")?;
        let mut magic = [0u8; 4];
        if let Err(e) = file.read_exact(&mut magic) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bail!("not a pcap or pcapng file (shorter than a file header)");
            }
            return Err(e).context("cannot read it");
        }
        let m = u32::from_be_bytes(magic);
        let source = Cursor::new(magic).chain(file);
        if PCAP_MAGICS.contains(&m) {
            let reader = PcapReader::new(source).context("not a valid pcap file")?;
            let dl = reader.header().datalink;
            let Some(link) = LinkType::from_datalink(dl) else {
                bail!(
                    "pcap link type {} ({dl:?}) is not supported; accepted: {}",
                    u32::from(dl),
                    link::ACCEPTED
                );
            };
            Ok(CaptureReader::Pcap { reader, link })
        } else if m == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(source).context("not a valid pcapng file")?;
            Ok(CaptureReader::PcapNg {
                reader,
                interfaces: Vec::new(),
            })
        } else {
            bail!("not a pcap or pcapng file (magic number {m:#010x})")
        }
    }

    pub fn format(&self) -> &'static str {
        match self {
            CaptureReader::Pcap { .. } => "pcap",
            CaptureReader::PcapNg { .. } => "pcapng",
        }
    }

    /// The timestamp resolution that keeps every input timestamp exact on output.
    pub fn ts_resolution(&self) -> TsResolution {
        match self {
            CaptureReader::Pcap { reader, .. } => reader.header().ts_resolution,
            CaptureReader::PcapNg { .. } => TsResolution::NanoSecond,
        }
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        match self {
            CaptureReader::Pcap { reader, link } => {
                let nanos = reader.header().ts_resolution == TsResolution::NanoSecond;
                // Raw records: pcap-file's checked ones reject a record whose original
                // length exceeds the snap length, i.e. every packet of a capture taken
                // with `tcpdump -s`. Such a cut packet reaches the translator, which
                // drops it as truncated.
                match reader.next_raw_packet() {
                    None => Ok(None),
                    Some(Err(e)) => Err(e.into()),
                    Some(Ok(p)) => Ok(Some(Frame {
                        timestamp: pcap_time(p.ts_sec, p.ts_frac, nanos),
                        link: *link,
                        data: p.data,
                    })),
                }
            }
            CaptureReader::PcapNg { reader, interfaces } => loop {
                let block = match reader.next_block() {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(b)) => b,
                };
                match block {
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let mut itf = Interface {
                            link: LinkType::from_datalink(idb.linktype).ok_or(idb.linktype),
                            tsresol: 6,
                            tsoffset: 0,
                        };
                        for o in &idb.options {
                            match o {
                                InterfaceDescriptionOption::IfTsResol(r) => itf.tsresol = *r,
                                InterfaceDescriptionOption::IfTsOffset(s) => itf.tsoffset = *s,
                                _ => {}
                            }
                        }
                        interfaces.push(itf);
                    }
                    Block::EnhancedPacket(epb) => {
                        let itf = lookup(interfaces, epb.interface_id)?;
                        // pcap-file 2 stores the raw timestamp units in `as_nanos()`,
                        // whatever the interface's resolution; apply it here.
                        let raw = epb.timestamp.as_nanos() as u64;
                        // Owned: returning a borrow of `reader` from inside this loop is
                        // beyond today's borrow checker. One copy per packet, fine here.
                        return Ok(Some(Frame {
                            timestamp: pcapng_time(raw, itf.tsresol, itf.tsoffset),
                            link: itf.link.unwrap_or(LinkType::Raw),
                            data: Cow::Owned(epb.data.into_owned()),
                        }));
                    }
                    Block::SimplePacket(spb) => {
                        // No timestamp; always interface 0. The block body is padded to
                        // 32 bits: the original length says where the packet ends.
                        let itf = lookup(interfaces, 0)?;
                        let len = (spb.original_len as usize).min(spb.data.len());
                        return Ok(Some(Frame {
                            timestamp: Duration::ZERO,
                            link: itf.link.unwrap_or(LinkType::Raw),
                            data: Cow::Owned(spb.data[..len].to_vec()),
                        }));
                    }
                    _ => {}
                }
            },
        }
    }
}

fn lookup(interfaces: &[Interface], id: u32) -> Result<Interface, ReadError> {
    let itf = *interfaces
        .get(id as usize)
        .ok_or(ReadError::UnknownInterface(id))?;
    if let Err(link) = itf.link {
        return Err(ReadError::UnsupportedLink {
            interface: id,
            link,
        });
    }
    Ok(itf)
}

/// A pcap record's timestamp; a fraction of a second out of range carries into seconds.
fn pcap_time(secs: u32, frac: u32, nanos: bool) -> Duration {
    let frac_ns = if nanos {
        u64::from(frac)
    } else {
        u64::from(frac) * 1000
    };
    Duration::from_secs(u64::from(secs)) + Duration::from_nanos(frac_ns)
}

/// A pcapng timestamp (`raw` units of the interface's resolution) as time since the epoch.
fn pcapng_time(raw: u64, tsresol: u8, tsoffset: u64) -> Duration {
    let raw = u128::from(raw);
    let nanos: u128 = if tsresol & 0x80 == 0 {
        let exp = u32::from(tsresol);
        if exp <= 9 {
            raw * 10u128.pow(9 - exp)
        } else {
            raw / 10u128.pow((exp - 9).min(38))
        }
    } else {
        let bits = u32::from(tsresol & 0x7f).min(127);
        (raw * 1_000_000_000) >> bits
    };
    let secs = (nanos / 1_000_000_000) as u64;
    let sub = (nanos % 1_000_000_000) as u32;
    Duration::new(secs.saturating_add(tsoffset), sub)
}

/// A pcap writer for raw IP packets (LINKTYPE_RAW, 101).
pub struct RawIpWriter {
    writer: PcapWriter<BufWriter<File>>,
}

/// Larger than any packet the translator can produce (64 KiB + headers).
const SNAPLEN: u32 = 262_144;

impl RawIpWriter {
    pub fn create(path: &Path, ts_resolution: TsResolution) -> anyhow::Result<Self> {
        let file = File::create(path).context("cannot create it")?;
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        let writer =
            PcapWriter::with_header(BufWriter::new(file), header).context("cannot write to it")?;
        Ok(RawIpWriter { writer })
    }

    pub fn write(&mut self, timestamp: Duration, packet: &[u8]) -> anyhow::Result<()> {
        let p = PcapPacket::new(timestamp, packet.len() as u32, packet);
        self.writer.write_packet(&p).context("cannot write to it")?;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let mut w = self.writer.into_writer();
        w.flush().context("cannot write to it")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{pcap_time, pcapng_time};
    use std::time::Duration;

    #[test]
    fn pcap_resolutions() {
        assert_eq!(pcap_time(5, 250_000, false), Duration::from_millis(5250));
        assert_eq!(pcap_time(5, 250_000, true), Duration::new(5, 250_000));
        assert_eq!(
            pcap_time(5, 1_500_000, false),
            Duration::new(6, 500_000_000)
        );
    }

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(pcapng_time(1_500_000, 6, 0), Duration::from_millis(1500));
        assert_eq!(
            pcapng_time(1_500_000_001, 9, 0),
            Duration::new(1, 500_000_001)
        );
        assert_eq!(pcapng_time(3, 0, 10), Duration::from_secs(13));
        assert_eq!(pcapng_time(1 << 20, 0x80 | 20, 0), Duration::from_secs(1));
        assert_eq!(
            pcapng_time(1 << 19, 0x80 | 20, 0),
            Duration::from_millis(500)
        );
        assert_eq!(pcapng_time(12_345, 12, 0), Duration::from_nanos(12));
    }
}
