//! Any text as the CNI plugin's input: the network configuration on stdin (with its
//! `prevResult`, and the `VERSION` answer to it), and `CNI_ARGS` from the environment (the
//! text's first line). Each is read or refused with an error that says what is wrong, never a
//! panic.
#![no_main]

use kxdp_cni::spec::{version_result, Config, Env};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => {
            if let Err(e) = config.prev() {
                assert!(e.details.starts_with("prevResult"), "{e}");
            }
        }
        Err(e) => assert!(!e.msg.is_empty() && !e.details.is_empty(), "{e:?}"),
    }
    let _ = version_result(text);
    let args = text.lines().next().unwrap_or_default().to_owned();
    let env = |name: &str| match name {
        "CNI_COMMAND" => Some("ADD".to_owned()),
        "CNI_CONTAINERID" => Some("fuzz".to_owned()),
        "CNI_NETNS" => Some("/run/netns/fuzz".to_owned()),
        "CNI_IFNAME" => Some("eth0".to_owned()),
        "CNI_PATH" => Some("/opt/cni/bin".to_owned()),
        "CNI_ARGS" => Some(args.clone()),
        _ => None,
    };
    if let Err(e) = Env::read(env) {
        assert!(!e.msg.is_empty() && !e.details.is_empty(), "{e:?}");
    }
});
