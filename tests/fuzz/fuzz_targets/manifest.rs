//! Any text as a manifest file: parsed or refused with an error, never a panic; a refusal
//! names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = kxdp_control::manifest::parse("fuzz.yaml", text) {
        assert!(e.to_string().contains("fuzz.yaml"), "{e}");
    }
});
