//! Any bytes as a frame: validation and 5-tuple extraction never panic, and a frame they
//! accept has a flow key whose protocol is the IPv4 header's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Ok(key) = kxdp_dataplane::pipeline::inspect(frame) {
        assert_eq!(
            key.proto,
            frame[14 + 9],
            "the key's protocol is the header's"
        );
    }
});
