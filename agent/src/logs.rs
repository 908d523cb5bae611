//! The agent's logs: `tracing` lines on stderr, as text or JSON.

/// Set up logging: text or JSON lines on stderr, filtered by RUST_LOG (default `info`).
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Make any panic, on any thread, end the agent at once: logged as an error (which thread,
/// where, and its message), then the process aborts, whatever the build's panic strategy.
/// A worker that died would otherwise leave its interfaces' traffic unserved while the rest
/// of the agent looks healthy; exiting lets the supervisor start a new one.
pub fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panic: {message}; aborting the agent"
        );
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Run in a child process of this test binary (the hook ends the process it is in).
    const CHILD: &str = "KXDP_PANIC_HOOK_CHILD";

    #[test]
    fn a_panic_on_any_thread_aborts_the_agent_with_the_cause_logged() {
        if std::env::var_os(CHILD).is_some() {
            super::init_logs(false);
            super::abort_on_panic();
            let worker = std::thread::Builder::new()
                .name("kxdp-worker-0".into())
                .spawn(|| panic!("a frame nobody expected"))
                .expect("a thread");
            let _ = worker.join();
            // Only reached if the panic did not end the process.
            std::process::exit(0);
        }
        let out = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "logs::tests::a_panic_on_any_thread_aborts_the_agent_with_the_cause_logged",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{:?}: {err}",
            out.status
        );
        assert!(
            err.contains("panic: a frame nobody expected; aborting the agent")
                && err.contains("thread=\"kxdp-worker-0\"")
                && err.contains("logs.rs:"),
            "{err}"
        );
    }
}
