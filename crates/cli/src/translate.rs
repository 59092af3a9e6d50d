//! `canopy translate`: the RFC 7915 translator over pcap files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use dataplane::drops::{DropCounters, DropReason};
use dataplane::siit::{Config, EncodeMap, PacketBuf, Translator, HEADROOM};
use model::{Locator, NetworkId};

use crate::capture::{CaptureReader, RawIpWriter, ReadError};
use crate::link::{self, Family};

const TRANSLATE_ABOUT: &str = "\
Translate captured packets between a VM's IPv4 and Canopy's IPv6 substrate (RFC 7915)";

const TRANSLATE_LONG: &str = "\
Translate captured packets between a VM's IPv4 and Canopy's IPv6 substrate (RFC 7915).

This runs the data path's translator (the same code the agents and edges run) over a
capture file, for debugging and conformance checks. `encode` turns the IPv4 packets a VM
sends into the IPv6 packets that cross the substrate; `decode` turns substrate packets
back into IPv4.

Packets that must not be translated (or are malformed) are left out of the output. The
command still exits 0 and prints a summary to stderr: packets read, translated, dropped,
and the drops by reason. Bad arguments and unreadable or unwritable files exit 2.";

#[derive(Debug, Args)]
#[command(about = TRANSLATE_ABOUT, long_about = TRANSLATE_LONG)]
pub struct TranslateArgs {
    #[command(subcommand)]
    pub command: TranslateCommand,
}

#[derive(Debug, Subcommand)]
pub enum TranslateCommand {
    /// IPv4 -> IPv6: encode a VM's packets for the substrate
    #[command(
        long_about = ENCODE_LONG,
        after_help = ENCODE_EXAMPLE,
        after_long_help = ENCODE_EXAMPLE
    )]
    Encode(EncodeArgs),
    /// IPv6 -> IPv4: decode substrate packets back to the IPv4 a VM sees
    #[command(
        long_about = DECODE_LONG,
        after_help = DECODE_EXAMPLE,
        after_long_help = DECODE_EXAMPLE
    )]
    Decode(DecodeArgs),
}

const ENCODE_LONG: &str = "\
IPv4 -> IPv6: encode a VM's packets for the substrate (RFC 7915 section 4).

Every IPv4 packet becomes an IPv6 packet whose addresses carry the virtual network and
the original IPv4 addresses:

  IPv6 src = first 72 bits of --src-locator | --net (24 bits) | IPv4 src (32 bits)
  IPv6 dst = first 72 bits of --dst-locator | --net (24 bits) | IPv4 dst (32 bits)

The payload is kept; TCP/UDP checksums are fixed for the IPv6 pseudo-header; TOS becomes
the traffic class; TTL is copied to the hop limit (see --decrement-ttl); IPv4 options are
removed (an unexpired source route is dropped); fragments get a fragment header; ICMP
becomes ICMPv6, including the packet inside an error message (which travelled the other
way, so its source uses --dst-locator and its destination --src-locator).

Input: pcap or pcapng, link type Ethernet (1; one 802.1Q tag is skipped, frames of other
EtherTypes are counted as not_ipv4), raw IP (101), IPv4 (228) or Linux cooked (113).
Output: pcap, link type raw IP (101), each packet with its input timestamp.";

const ENCODE_EXAMPLE: &str = "\
Example: a VM of network 42 on the host with locator fd63:6e73:0:1::/72 talks to a VM on
the host with locator fd63:6e73:0:2::/72; 10.0.0.3 -> 10.0.0.7 becomes
fd63:6e73:0:1:0:2a:a00:3 -> fd63:6e73:0:2:0:2a:a00:7:

  canopy translate encode --net 42 --src-locator fd63:6e73:0:1:: \\
      --dst-locator fd63:6e73:0:2:: vm-traffic.pcap substrate.pcap";

const DECODE_LONG: &str = "\
IPv6 -> IPv4: decode substrate packets back to IPv4 (RFC 7915 section 5).

Each IPv6 address's low 32 bits are the IPv4 address (the locator and network id in front
of them are dropped; no argument is needed). The hop limit becomes the TTL, the traffic
class the TOS, a fragment header becomes the IPv4 fragment fields, ICMPv6 becomes ICMP
(including the packet inside an error message), checksums are fixed.

Input: pcap or pcapng, link type raw IP (101), IPv6 (229), Ethernet (1; one 802.1Q tag is
skipped, frames of other EtherTypes are counted as not_ipv6) or Linux cooked (113).
Output: pcap, link type raw IP (101), each packet with its input timestamp.";

const DECODE_EXAMPLE: &str = "\
Example: undo an encode (decode(encode(p)) is p, except for the fields RFC 7915 rewrites:
IPv4 identification and DF of unfragmented packets, header checksum, options):

  canopy translate decode substrate.pcap vm-traffic-again.pcap";

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Virtual network id, 0..=16777215 (24 bits), decimal or 0x-prefixed hex
    #[arg(long, value_name = "ID")]
    pub net: NetworkId,
    /// Locator of the sending host or edge: an IPv6 address (or prefix written /72) of
    /// which the first 72 bits are used
    #[arg(long, value_name = "IPV6")]
    pub src_locator: Locator,
    /// Locator of the receiving host or edge: an IPv6 address (or prefix written /72) of
    /// which the first 72 bits are used
    #[arg(long, value_name = "IPV6")]
    pub dst_locator: Locator,
    /// Act as an RFC 7915 router: decrement TTL to make the hop limit, and drop packets
    /// whose TTL would reach 0 (counted as ttl_exceeded). By default TTL is copied
    /// unchanged: in Canopy the agent's router emulation decrements TTL, not the encoding
    #[arg(long)]
    pub decrement_ttl: bool,
    #[command(flatten)]
    pub files: Files,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Act as an RFC 7915 router: decrement the hop limit to make the TTL, and drop
    /// packets whose hop limit would reach 0 (counted as ttl_exceeded)
    #[arg(long)]
    pub decrement_ttl: bool,
    #[command(flatten)]
    pub files: Files,
}

#[derive(Debug, Args)]
pub struct Files {
    /// Capture to read (pcap or pcapng)
    #[arg(value_name = "in.pcap")]
    pub input: PathBuf,
    /// Capture to write (pcap, raw IP); replaced if it exists
    #[arg(value_name = "out.pcap")]
    pub output: PathBuf,
}

/// What a run did, printed to stderr at the end.
#[derive(Debug, Default)]
pub struct Summary {
    pub read: u64,
    pub translated: u64,
    pub drops: DropCounters,
    /// Set when the input ended in the middle of a record.
    pub cut_short: bool,
}

impl Summary {
    pub fn dropped(&self) -> u64 {
        self.drops.total()
    }

    /// One line per figure; the drop reasons indented under `dropped`.
    pub fn render(&self) -> String {
        let mut s = format!(
            "packets read: {}\ntranslated: {}\ndropped: {}\n",
            self.read,
            self.translated,
            self.dropped()
        );
        for (reason, n) in self.drops.iter() {
            s.push_str(&format!("  {}: {n}\n", reason.as_str()));
        }
        s
    }
}

pub fn run(args: TranslateArgs) -> anyhow::Result<Summary> {
    match args.command {
        TranslateCommand::Encode(a) => {
            let map = EncodeMap {
                network: a.net,
                src: a.src_locator,
                dst: a.dst_locator,
            };
            tracing::info!(net = %map.network, src = %map.src, dst = %map.dst, "encoding");
            let mut t = translator(a.decrement_ttl);
            translate_file(&a.files, Family::Ipv4, |p| t.encode(&map, p, None))
        }
        TranslateCommand::Decode(a) => {
            let mut t = translator(a.decrement_ttl);
            translate_file(&a.files, Family::Ipv6, |p| t.decode(p, None).map(|_| ()))
        }
    }
}

fn translator(decrement_ttl: bool) -> Translator {
    Translator::new(Config {
        decrement_ttl,
        ..Config::default()
    })
}

/// Room after the packet, beyond what the translator may need.
const TAILROOM: usize = 64;

fn translate_file(
    files: &Files,
    family: Family,
    mut translate: impl FnMut(&mut PacketBuf<'_>) -> Result<(), DropReason>,
) -> anyhow::Result<Summary> {
    let input = &files.input;
    let mut reader =
        CaptureReader::open(input).with_context(|| format!("<in.pcap> {}", input.display()))?;
    tracing::info!(input = %input.display(), format = reader.format(), "reading");
    if let (Ok(a), Ok(b)) = (input.canonicalize(), files.output.canonicalize()) {
        if a == b {
            anyhow::bail!(
                "{}: is the same file as <in.pcap>; writing it would destroy the input",
                out_ctx(&files.output)
            );
        }
    }
    let mut writer = RawIpWriter::create(&files.output, reader.ts_resolution())
        .with_context(|| out_ctx(&files.output))?;

    let mut summary = Summary::default();
    let mut buf = Vec::new();
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(ReadError::CutShort) => {
                tracing::warn!(
                    input = %input.display(),
                    after = summary.read,
                    "input ends in the middle of a record (capture cut short?); the rest is ignored"
                );
                summary.cut_short = true;
                break;
            }
            Err(e) => {
                // Keep what was translated so far, then report.
                writer.finish().with_context(|| out_ctx(&files.output))?;
                return Err(anyhow::Error::new(e).context(format!(
                    "<in.pcap> {}: bad record after packet {}",
                    input.display(),
                    summary.read
                )));
            }
        };
        summary.read += 1;
        let n = summary.read;
        let result = link::ip_packet(frame.link, family, &frame.data).and_then(|pkt| {
            buf.clear();
            buf.resize(HEADROOM + pkt.len() + TAILROOM, 0);
            buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
            let mut p = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
            translate(&mut p)?;
            Ok(p.range())
        });
        match result {
            Ok(range) => {
                summary.translated += 1;
                tracing::trace!(packet = n, len = range.len(), "translated");
                writer
                    .write(frame.timestamp, &buf[range])
                    .with_context(|| out_ctx(&files.output))?;
            }
            Err(reason) => {
                summary.drops.inc(reason);
                tracing::debug!(packet = n, reason = reason.as_str(), "dropped");
            }
        }
    }
    writer.finish().with_context(|| out_ctx(&files.output))?;
    debug_assert_eq!(summary.read, summary.translated + summary.dropped());
    Ok(summary)
}

fn out_ctx(p: &Path) -> String {
    format!("<out.pcap> {}", p.display())
}
