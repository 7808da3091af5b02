//! A progress line for long commands: redrawn on stderr a few times a second while the work
//! runs, only when stderr is a terminal (pipes and logs get the final report alone), and
//! cleared when the work ends.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// A running progress line; [`Line::finish`] clears it.
pub(crate) struct Line {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Line {
    /// Starts redrawing `status(elapsed)` on stderr, if stderr is a terminal.
    pub(crate) fn start(mut status: impl FnMut(Duration) -> String + Send + 'static) -> Line {
        if !std::io::stderr().is_terminal() {
            return Line {
                stop: None,
                task: None,
            };
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let mut err = std::io::stderr().lock();
                        // A failed redraw only loses one frame of the display.
                        if write!(err, "\r\x1b[2K{}", status(started.elapsed())).is_err() {
                            break;
                        }
                        if err.flush().is_err() {
                            break;
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
            eprint!("\r\x1b[2K");
        });
        Line {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Clears the line.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            // dropped: the task may have ended on a failed write; then there is nothing to stop.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                eprintln!("progress display: {e}");
            }
        }
    }
}

/// `n` bytes in MiB or GiB, whichever reads better.
pub(crate) fn size(n: u64) -> String {
    let mib = n as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// `done` of `total` as a percentage (0 when the total is unknown).
pub(crate) fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}
