//! The progress line: on a terminal, one line on stderr redrawn before each measurement
//! (step, percentage, what runs, time left); elsewhere, nothing (the results say enough).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
    drawn: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Shows that `what` starts now.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        if !self.tty {
            return;
        }
        let frac = (self.done - 1) as f64 / self.total as f64;
        let width = 24;
        let filled = (frac * width as f64).round() as usize;
        let eta = if self.done > 1 {
            let per = self.start.elapsed().as_secs_f64() / (self.done - 1) as f64;
            let left = per * (self.total - self.done + 1) as f64;
            format!("{:.0}m{:02.0}s left", (left / 60.0).floor(), left % 60.0)
        } else {
            String::new()
        };
        let line = format!(
            "[{}{}] {:>3}/{} {:>3.0}% {what:<48} {eta}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            frac * 100.0
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the line (before printing results).
    pub fn clear(&mut self) {
        if self.tty && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
