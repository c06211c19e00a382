//! Shutdown hooks: work that runs once after the drain, in priority order,
//! each under its own timeout and all under the window's deadline.
//!
//! Lower `priority` runs first. A failing or hanging hook is logged and cut;
//! it never keeps the process past the deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ShutdownHookConfig;

type HookFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

enum Work {
    /// argv, and the environment variables it must not inherit.
    Command(Vec<String>, Vec<String>),
    Code(Box<dyn FnOnce() -> HookFuture + Send>),
}

struct Hook {
    name: String,
    priority: i32,
    timeout: Duration,
    work: Work,
}

/// The registered hooks, run once by [`ShutdownHooks::run`].
#[derive(Default)]
pub(crate) struct ShutdownHooks {
    hooks: Vec<Hook>,
}

impl ShutdownHooks {
    /// Registers code to run at shutdown.
    pub(crate) fn add<F, Fut>(&mut self, name: &str, priority: i32, timeout: Duration, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.hooks.push(Hook {
            name: name.to_string(),
            priority,
            timeout,
            work: Work::Code(Box::new(move || Box::pin(f()))),
        });
    }

    /// Registers the `[[shutdown.hook]]` commands of the config. `hidden_env`
    /// names the variables secrets came from: a cleanup script has no business
    /// with a hook's token, and would leak it to anything it logs or runs.
    pub(crate) fn add_configured(&mut self, hooks: &[ShutdownHookConfig], hidden_env: &[String]) {
        for h in hooks {
            self.hooks.push(Hook {
                name: h.name.clone(),
                priority: h.priority,
                timeout: h.timeout,
                work: Work::Command(h.exec.clone(), hidden_env.to_vec()),
            });
        }
    }

    /// Runs every hook in priority order (ties in registration order), each
    /// cut at its own timeout or at `deadline`, whichever comes first.
    pub(crate) async fn run(mut self, deadline: Instant) {
        self.hooks.sort_by_key(|h| h.priority);
        for hook in self.hooks {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(hookd_event = "shutdown_hook_skipped", hook = %hook.name, "no time left in the window; shutdown hook skipped");
                continue;
            }
            let limit = hook.timeout.min(deadline - now);
            let started = Instant::now();
            let res = match hook.work {
                Work::Code(f) => match tokio::time::timeout(limit, f()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("cut after {}", humantime::format_duration(limit))),
                },
                Work::Command(argv, hidden) => run_command(&argv, &hidden, limit).await,
            };
            let ms = started.elapsed().as_millis() as u64;
            match res {
                Ok(()) => {
                    tracing::info!(hookd_event = "shutdown_hook_done", hook = %hook.name, priority = hook.priority, duration_ms = ms, "shutdown hook done")
                }
                Err(e) => {
                    tracing::warn!(hookd_event = "shutdown_hook_failed", hook = %hook.name, priority = hook.priority, duration_ms = ms, error = %e, "shutdown hook failed: {e}")
                }
            }
        }
    }
}

/// Runs a command in its own process group; on timeout the group is killed.
async fn run_command(argv: &[String], hidden: &[String], limit: Duration) -> Result<(), String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(prog);
    for var in hidden {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("{prog} exited with {st}")),
        Ok(Err(e)) => Err(format!("waiting for {prog}: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let pgid = nix::unistd::Pid::from_raw(-(pid as i32));
                let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!(
                "{prog} cut after {}",
                humantime::format_duration(limit)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn runs_in_priority_order_and_cuts_a_hanging_hook() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut hooks = ShutdownHooks::default();
        for (name, prio) in [("late", 20), ("early", -5), ("middle", 0)] {
            let order = order.clone();
            hooks.add(name, prio, Duration::from_secs(5), move || async move {
                order.lock().unwrap().push(name);
                Ok(())
            });
        }
        hooks.add("hangs", 1, Duration::from_millis(200), || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let started = Instant::now();
        hooks.run(Instant::now() + Duration::from_secs(10)).await;
        assert_eq!(*order.lock().unwrap(), vec!["early", "middle", "late"]);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_at_its_timeout() {
        let mut hooks = ShutdownHooks::default();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("after");
        hooks.add_configured(
            &[ShutdownHookConfig {
                name: "sleeper".into(),
                exec: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("sleep 30; touch {}", marker.display()),
                ],
                priority: 0,
                timeout: Duration::from_millis(300),
            }],
            &[],
        );
        let started = Instant::now();
        hooks.run(Instant::now() + Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn secret_variables_are_not_inherited() {
        // The test's own environment stands in for the daemon's: PATH is set
        // in every test run, HOME too; hide one and keep the other.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let mut hooks = ShutdownHooks::default();
        hooks.add_configured(
            &[ShutdownHookConfig {
                name: "env".into(),
                exec: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!(
                        "echo \"path=${{PATH:-unset}} home=${{HOME:-unset}}\" > {}",
                        out.display()
                    ),
                ],
                priority: 0,
                timeout: Duration::from_secs(5),
            }],
            &["HOME".to_string()],
        );
        hooks.run(Instant::now() + Duration::from_secs(10)).await;
        let seen = std::fs::read_to_string(&out).unwrap();
        assert!(seen.contains("home=unset"), "{seen}");
        assert!(!seen.contains("path=unset"), "{seen}");
    }
}
