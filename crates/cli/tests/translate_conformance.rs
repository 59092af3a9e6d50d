//! Conformance of `canopy translate` with RFC 7915, checked by tools that share no code
//! with Canopy: scapy builds the packets and checks every translated field
//! (tests/scapy/*.py), tshark validates every checksum and flags malformed packets.
//!
//! Needs `/usr/bin/python3` with scapy (Debian: python3-scapy) and `tshark`. Without them
//! the tests print `SKIPPED: <why>` and pass, unless the environment variable `CI` is
//! set: CI must have them (`.ci/run` installs them).
//!
//! The argument-error, help and timestamp tests need no tools and always run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, TsResolution};

const CANOPY: &str = env!("CARGO_BIN_EXE_canopy");
const PYTHON: &str = "/usr/bin/python3";

/// A network id with all 24 bits in use, and locators whose bits past /72 must be ignored
/// (src) or that are written as a prefix (dst).
const NET: &str = "0xabcdef";
const SRC_LOC: &str = "fd63:6e73:0:1:ab12:3456:789a:bcde";
const DST_LOC: &str = "fd63:6e73:ff:2::/72";

// ---- tools ---------------------------------------------------------------------------

/// `None` when scapy and tshark are usable; otherwise why not. Panics under CI.
fn tools_missing() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    let why = WHY
        .get_or_init(|| {
            let scapy = Command::new(PYTHON)
                .args(["-c", "import scapy.all"])
                .output();
            match scapy {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Some(format!(
                        "{PYTHON} cannot import scapy (apt-get install python3-scapy): {}",
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ))
                }
                Err(e) => return Some(format!("cannot run {PYTHON}: {e}")),
            }
            match Command::new("tshark").arg("--version").output() {
                Ok(o) if o.status.success() => None,
                _ => Some("tshark is not installed (apt-get install tshark)".to_string()),
            }
        })
        .clone();
    if let Some(w) = &why {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("CI is set, so the conformance tools must be installed: {w}");
        }
    }
    why
}

macro_rules! require_tools {
    () => {
        if let Some(why) = tools_missing() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn scapy_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scapy")
        .join(name)
}

fn target_tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A scratch directory, removed when the test passes and kept (and named) when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = target_tmp().join(format!("translate-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Generates the scapy cases here (gen_cases.py) and returns self.
    fn with_cases(self) -> Self {
        python("gen_cases.py", &[self.0.to_str().unwrap()]);
        self
    }

    /// A generated case file, as a string argument.
    fn case(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn python(script: &str, args: &[&str]) {
    let o = Command::new(PYTHON)
        .arg("-B") // no __pycache__ in the source tree
        .arg(scapy_script(script))
        .args(args)
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(o.status.success(), "{script} failed:\n{}", show(&o));
}

fn canopy(args: &[&str]) -> Output {
    Command::new(CANOPY)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs canopy, which must exit 0; its stderr (the summary) goes to `summary`.
fn canopy_ok(args: &[&str], summary: &Path) {
    let o = canopy(args);
    assert!(o.status.success(), "canopy {args:?}:\n{}", show(&o));
    fs::write(summary, &o.stderr).unwrap();
}

fn encode_args<'a>(input: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "translate",
        "encode",
        "--net",
        NET,
        "--src-locator",
        SRC_LOC,
        "--dst-locator",
        DST_LOC,
        input,
        output,
    ]
}

/// tshark, with checksum validation on, must find no bad checksum, no malformed packet
/// and no expert info of warning severity or worse. Application payloads are decoded as
/// plain data: the test payloads are not meant to be DNS or anything else, and only the
/// headers the translator writes are under test.
fn tshark_clean(pcap: &Path) {
    let common = [
        "-n",
        "-d",
        "udp.port==1-65535,data",
        "-d",
        "tcp.port==1-65535,data",
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "tcp.analyze_sequence_numbers:FALSE",
    ];
    let run = |filter: &str| {
        let o = Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(common)
            .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
            .args(["-e", "_ws.col.Info", "-e", "_ws.expert.message"])
            .output()
            .unwrap();
        assert!(o.status.success(), "tshark failed:\n{}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let bad = run("_ws.malformed || _ws.expert.severity >= \"Warning\"");
    assert!(
        bad.trim().is_empty(),
        "tshark found problems in {}:\n{bad}",
        pcap.display()
    );
    // And it did validate checksums (0 = bad, 1 = good in Wireshark's checksum status).
    let good = run(
        "ip.checksum.status == 1 || tcp.checksum.status == 1 || udp.checksum.status == 1 \
         || icmp.checksum.status == 1 || icmpv6.checksum.status == 1",
    );
    assert!(
        good.lines().count() > 0,
        "tshark validated no checksum in {}",
        pcap.display()
    );
    eprintln!(
        "tshark: {} clean, {} packets with checksums verified good",
        pcap.display(),
        good.lines().count()
    );
}

// ---- the conformance runs --------------------------------------------------------------

#[test]
fn encode_then_decode_with_scapy_and_tshark() {
    require_tools!();
    let w = Scratch::new("roundtrip").with_cases();
    let (enc, enc_sum) = (w.path("enc.pcap"), w.path("enc.txt"));
    let (back, back_sum) = (w.path("back.pcap"), w.path("back.txt"));
    let s = |p: &Path| p.to_str().unwrap().to_string();

    canopy_ok(&encode_args(&w.case("v4-eth.pcap"), &s(&enc)), &enc_sum);
    python(
        "check_encode.py",
        &[
            &w.case("v4-cases.json"),
            &w.case("v4-eth.pcap"),
            &s(&enc),
            &s(&enc_sum),
            NET,
            SRC_LOC,
            DST_LOC,
        ],
    );
    tshark_clean(&enc);

    canopy_ok(&["translate", "decode", &s(&enc), &s(&back)], &back_sum);
    python(
        "check_roundtrip.py",
        &[
            &w.case("v4-cases.json"),
            &w.case("v4-eth.pcap"),
            &s(&enc),
            &s(&back),
            &s(&back_sum),
        ],
    );
    tshark_clean(&back);
}

#[test]
fn decode_scapy_ipv6_with_scapy_and_tshark() {
    require_tools!();
    let w = Scratch::new("decode").with_cases();
    let (out, sum) = (w.path("dec.pcap"), w.path("dec.txt"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    canopy_ok(
        &["translate", "decode", &w.case("v6-eth.pcap"), &s(&out)],
        &sum,
    );
    python(
        "check_decode.py",
        &[
            &w.case("v6-cases.json"),
            &w.case("v6-eth.pcap"),
            &s(&out),
            &s(&sum),
        ],
    );
    tshark_clean(&out);
}

#[test]
fn encode_with_decrement_ttl() {
    require_tools!();
    let w = Scratch::new("ttl").with_cases();
    let (out, sum) = (w.path("enc.pcap"), w.path("enc.txt"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (input, output) = (w.case("v4-eth.pcap"), s(&out));
    let mut args = encode_args(&input, &output);
    args.insert(2, "--decrement-ttl");
    canopy_ok(&args, &sum);
    python(
        "check_encode.py",
        &[
            &w.case("v4-cases.json"),
            &input,
            &output,
            &s(&sum),
            NET,
            SRC_LOC,
            DST_LOC,
            "--decrement-ttl",
        ],
    );
    tshark_clean(&out);
}

/// The same packets as raw IPv4 (link type 228) and as pcapng give the same output as
/// the Ethernet pcap, timestamps included.
#[test]
fn raw_ipv4_and_pcapng_inputs_match_ethernet() {
    require_tools!();
    let w = Scratch::new("links").with_cases();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let reference = w.path("eth.pcap");
    canopy_ok(
        &encode_args(&w.case("v4-eth.pcap"), &s(&reference)),
        &w.path("eth.txt"),
    );

    let raw = w.path("raw.pcap");
    canopy_ok(
        &encode_args(&w.case("v4-raw.pcap"), &s(&raw)),
        &w.path("raw.txt"),
    );
    python(
        "check_encode.py",
        &[
            &w.case("v4-cases.json"),
            &w.case("v4-raw.pcap"),
            &s(&raw),
            &s(&w.path("raw.txt")),
            NET,
            SRC_LOC,
            DST_LOC,
        ],
    );
    assert_eq!(
        read_pcap(&raw).1,
        read_pcap(&reference).1,
        "link type 228 input"
    );

    let ng_in = w.path("v4-eth.pcapng");
    let o = Command::new("tshark")
        .args([
            "-r",
            &w.case("v4-eth.pcap"),
            "-F",
            "pcapng",
            "-w",
            &s(&ng_in),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "tshark -F pcapng:\n{}", show(&o));
    let ng = w.path("ng.pcap");
    canopy_ok(&encode_args(&s(&ng_in), &s(&ng)), &w.path("ng.txt"));
    assert_eq!(read_pcap(&ng).1, read_pcap(&reference).1, "pcapng input");
    assert_eq!(
        fs::read_to_string(w.path("ng.txt")).unwrap(),
        fs::read_to_string(w.path("eth.txt")).unwrap()
    );
}

// ---- tests without external tools --------------------------------------------------------

fn read_pcap(path: &Path) -> (PcapHeader, Vec<(Duration, Vec<u8>)>) {
    let mut r = PcapReader::new(fs::File::open(path).unwrap()).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        v.push((p.timestamp, p.data.into_owned()));
    }
    (r.header(), v)
}

fn write_pcap(path: &Path, link: DataLink, res: TsResolution, pkts: &[(Duration, Vec<u8>)]) {
    let header = PcapHeader {
        datalink: link,
        ts_resolution: res,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(fs::File::create(path).unwrap(), header).unwrap();
    for (ts, data) in pkts {
        w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
            .unwrap();
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A minimal IPv4/UDP packet 10.0.0.3 -> 10.0.0.7 (UDP checksum 0: the encoder computes one).
fn udp4(payload: &[u8]) -> Vec<u8> {
    let total = (28 + payload.len()) as u16;
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 3, 10, 0, 0, 7,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 3];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[test]
fn keeps_nanosecond_timestamps_and_prints_a_summary() {
    let w = Scratch::new("timestamps");
    let input = w.path("in.pcap");
    let t1 = Duration::new(1_700_000_000, 123_456_789);
    let t2 = Duration::new(1_700_000_001, 1);
    let t3 = Duration::new(1_700_000_002, 999_999_999);
    write_pcap(
        &input,
        DataLink::ETHERNET,
        TsResolution::NanoSecond,
        &[
            (t1, ethernet(0x0800, &udp4(b"hello"))),
            (t2, ethernet(0x0806, &[0; 28])),
            (t3, ethernet(0x0800, &udp4(b"odd"))),
        ],
    );
    let out = w.path("out.pcap");
    let o = canopy(&[
        "translate",
        "encode",
        "--net",
        "42",
        "--src-locator",
        "fd63:6e73:0:1::",
        "--dst-locator",
        "fd63:6e73:0:2::",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr, "packets read: 3\ntranslated: 2\ndropped: 1\n  not_ipv4: 1\n",
        "summary"
    );
    let (header, pkts) = read_pcap(&out);
    assert_eq!(header.datalink, DataLink::RAW);
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    assert_eq!(pkts.len(), 2);
    assert_eq!((pkts[0].0, pkts[1].0), (t1, t3));
    let p = &pkts[0].1;
    assert_eq!(p[0] >> 4, 6);
    // fd63:6e73:0:1:0:2a:a00:3 -> fd63:6e73:0:2:0:2a:a00:7, as the help text says.
    let src: [u8; 16] = p[8..24].try_into().unwrap();
    let dst: [u8; 16] = p[24..40].try_into().unwrap();
    assert_eq!(
        std::net::Ipv6Addr::from(src).to_string(),
        "fd63:6e73:0:1:0:2a:a00:3"
    );
    assert_eq!(
        std::net::Ipv6Addr::from(dst).to_string(),
        "fd63:6e73:0:2:0:2a:a00:7"
    );

    // And back, with the summary of a clean run.
    let back = w.path("back.pcap");
    let o = canopy(&[
        "translate",
        "decode",
        out.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "packets read: 2\ntranslated: 2\ndropped: 0\n"
    );
    let (_, pkts) = read_pcap(&back);
    assert_eq!(pkts[0].0, t1);
    assert_eq!(&pkts[0].1[12..20], &[10, 0, 0, 3, 10, 0, 0, 7]);
}

/// Runs canopy expecting exit code 2 and an error whose first line names `what`.
fn usage_error(args: &[&str], what: &[&str]) {
    let err = exit_2(args);
    let first = err.lines().next().unwrap_or("");
    for w in what {
        assert!(
            first.contains(w),
            "canopy {args:?}: first line of stderr does not name {w:?}:\n{err}"
        );
    }
}

/// Runs canopy expecting exit code 2 and an error message; returns stderr.
fn exit_2(args: &[&str]) -> String {
    let o = canopy(args);
    assert_eq!(o.status.code(), Some(2), "canopy {args:?}:\n{}", show(&o));
    assert!(o.stdout.is_empty(), "nothing on stdout:\n{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.starts_with("error: ") || err.starts_with("canopy: error: "),
        "{err}"
    );
    err
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let w = Scratch::new("errors");
    let good_in = w.path("in.pcap");
    write_pcap(
        &good_in,
        DataLink::RAW,
        TsResolution::MicroSecond,
        &[(Duration::ZERO, udp4(b"x"))],
    );
    let good_in = good_in.to_str().unwrap();
    let out = w.path("out.pcap");
    let out = out.to_str().unwrap();
    let enc = |net: &str, src: &str, input: &str, output: &str| {
        vec![
            "translate".to_string(),
            "encode".into(),
            "--net".into(),
            net.into(),
            "--src-locator".into(),
            src.into(),
            "--dst-locator".into(),
            "fd63:6e73:0:2::".into(),
            input.into(),
            output.into(),
        ]
    };
    // Errors about files are one line, naming the argument and the path.
    let run = |args: Vec<String>, what: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        usage_error(&a, what);
        if what[0].starts_with('<') {
            assert_eq!(exit_2(&a).lines().count(), 1, "one line");
        }
    };
    let loc = "fd63:6e73:0:1::";
    run(enc("16777216", loc, good_in, out), &["--net", "16777216"]);
    run(enc("abc", loc, good_in, out), &["--net", "abc"]);
    run(
        enc("42", "192.0.2.1", good_in, out),
        &["--src-locator", "192.0.2.1"],
    );
    run(enc("42", "fd63::/64", good_in, out), &["--src-locator"]);

    let missing = w.path("does-not-exist.pcap");
    let missing = missing.to_str().unwrap();
    run(enc("42", loc, missing, out), &["<in.pcap>", missing]);
    run(
        vec![
            "translate".into(),
            "decode".into(),
            missing.into(),
            out.into(),
        ],
        &["<in.pcap>", missing],
    );
    assert!(!Path::new(out).exists(), "no output for a missing input");

    let text = w.path("notes.txt");
    fs::write(&text, "not a capture at all\n").unwrap();
    let text = text.to_str().unwrap();
    run(
        enc("42", loc, text, out),
        &["<in.pcap>", text, "not a pcap"],
    );
    let empty = w.path("empty.pcap");
    fs::write(&empty, "").unwrap();
    run(
        enc("42", loc, empty.to_str().unwrap(), out),
        &["<in.pcap>", "not a pcap"],
    );
    let dir = w.0.to_str().unwrap();
    run(enc("42", loc, dir, out), &["<in.pcap>"]);

    let unsupported = w.path("ppp.pcap");
    write_pcap(&unsupported, DataLink::PPP, TsResolution::MicroSecond, &[]);
    run(
        enc("42", loc, unsupported.to_str().unwrap(), out),
        &["<in.pcap>", "link type 9"],
    );

    run(
        enc("42", loc, good_in, good_in),
        &["<out.pcap>", "same file"],
    );
    assert!(
        read_pcap(Path::new(good_in)).1.len() == 1,
        "input left alone"
    );

    let unwritable = w.path("no/such/dir/out.pcap");
    let unwritable = unwritable.to_str().unwrap();
    run(
        enc("42", loc, good_in, unwritable),
        &["<out.pcap>", unwritable],
    );

    // clap's own usage errors also exit 2.
    assert!(exit_2(&["translate", "encode", good_in, out]).contains("--net"));
    assert!(exit_2(&["translate", "decode", good_in]).contains("<out.pcap>"));
    usage_error(&["frobnicate"], &["frobnicate"]);
}

#[test]
fn a_capture_cut_short_is_translated_up_to_the_cut() {
    let w = Scratch::new("cut");
    let input = w.path("in.pcap");
    write_pcap(
        &input,
        DataLink::RAW,
        TsResolution::MicroSecond,
        &[
            (Duration::ZERO, udp4(b"one")),
            (Duration::ZERO, udp4(b"two")),
        ],
    );
    let mut bytes = fs::read(&input).unwrap();
    bytes.truncate(bytes.len() - 5);
    fs::write(&input, bytes).unwrap();
    let out = w.path("out.pcap");
    let o = canopy(&[
        "translate",
        "decode",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cut short"), "{err}");
    assert!(err.contains("packets read: 1\n"), "{err}");
    assert!(err.contains("  not_ipv6: 1\n"), "{err}");
}

#[test]
fn help_explains() {
    let top = canopy(&["--help"]);
    assert!(top.status.success());
    let top = String::from_utf8_lossy(&top.stdout);
    for w in ["virtual", "IPv6 substrate", "translate", "RUST_LOG"] {
        assert!(top.contains(w), "canopy --help lacks {w:?}:\n{top}");
    }
    let enc = canopy(&["translate", "encode", "--help"]);
    assert!(enc.status.success());
    let enc = String::from_utf8_lossy(&enc.stdout);
    for w in [
        "--src-locator <IPV6>",
        "--dst-locator <IPV6>",
        "--net <ID>",
        "--decrement-ttl",
        "first 72 bits of --src-locator | --net (24 bits) | IPv4 src",
        "canopy translate encode --net 42",
    ] {
        assert!(enc.contains(w), "encode --help lacks {w:?}:\n{enc}");
    }
    let dec = canopy(&["translate", "decode", "--help"]);
    assert!(dec.status.success());
    let dec = String::from_utf8_lossy(&dec.stdout);
    for w in ["low 32 bits", "canopy translate decode"] {
        assert!(dec.contains(w), "decode --help lacks {w:?}:\n{dec}");
    }
}

/// The README's first command, on the shipped sample: every packet translates both ways.
#[test]
fn readme_sample_translates_both_ways() {
    let w = Scratch::new("sample");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/vm-traffic.pcap");
    let (sub, back) = (w.path("substrate.pcap"), w.path("again.pcap"));
    let o = canopy(&[
        "translate",
        "encode",
        "--net",
        "42",
        "--src-locator",
        "fd63:6e73:0:1::",
        "--dst-locator",
        "fd63:6e73:0:2::",
        sample.to_str().unwrap(),
        sub.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "packets read: 11\ntranslated: 11\ndropped: 0\n"
    );
    let o = canopy(&[
        "translate",
        "decode",
        sub.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "packets read: 11\ntranslated: 11\ndropped: 0\n"
    );
}

/// A capture taken with a snap length (`tcpdump -s 60`): cut packets are dropped as
/// truncated, whole ones translated.
#[test]
fn packets_cut_by_the_snap_length_are_dropped_as_truncated() {
    let w = Scratch::new("snaplen");
    let input = w.path("in.pcap");
    let header = PcapHeader {
        datalink: DataLink::RAW,
        snaplen: 60,
        ..PcapHeader::default()
    };
    let mut wr = PcapWriter::with_header(fs::File::create(&input).unwrap(), header).unwrap();
    let big = udp4(&[7; 100]);
    let small = udp4(b"fits");
    wr.write_packet(&PcapPacket::new(
        Duration::ZERO,
        big.len() as u32,
        &big[..60],
    ))
    .unwrap();
    wr.write_packet(&PcapPacket::new(Duration::ZERO, small.len() as u32, &small))
        .unwrap();
    drop(wr);
    let out = w.path("out.pcap");
    let mut args = encode_args(input.to_str().unwrap(), out.to_str().unwrap());
    args[3] = "42";
    let o = canopy(&args);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "packets read: 2\ntranslated: 1\ndropped: 1\n  truncated: 1\n"
    );
}
