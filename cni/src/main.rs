//! `kxdp-cni`: run by the container runtime with the `CNI_*` environment and the network
//! configuration on stdin; prints the result (or a CNI error object) on stdout and exits 0 on
//! success, 1 on error.

use std::io::{Read as _, Write as _};

use kxdp_cni::spec::{self, CniError, Env};

fn main() {
    let mut input = String::new();
    let read = std::io::stdin().read_to_string(&mut input);
    let version = spec::version_of(&input).unwrap_or(spec::LATEST);
    let outcome = Env::read(|name| std::env::var(name).ok()).and_then(|env| {
        if let Err(e) = read {
            return Err(CniError::new(
                spec::code::IO_FAILURE,
                "cannot read the network configuration",
                format!("stdin: {e}"),
            ));
        }
        kxdp_cni::plugin::run(&env, &input)
    });
    let (text, code) = match outcome {
        Ok(None) => (None, 0),
        Ok(Some(result)) => (Some(result), 0),
        Err(e) => {
            eprintln!("kxdp-cni: {e}");
            (Some(e.to_json(version)), 1)
        }
    };
    if let Some(json) = text {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{json}");
        let _ = out.flush();
    }
    std::process::exit(code);
}
