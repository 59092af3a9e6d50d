#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::virtio::VirtioNetHdr;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = VirtioNetHdr::parse(data) else { return };
    let mut b = [0u8; wire::virtio::HEADER_LEN];
    h.emit(&mut b).unwrap();
    assert_eq!(&b[..], &data[..wire::virtio::HEADER_LEN]);
});
