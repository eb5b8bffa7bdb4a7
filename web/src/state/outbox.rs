//! The user's own messages on their way out: one at a time, in the order
//! they were written.
//!
//! Each `Send` is a unary call of its own, a separate HTTP request, perhaps
//! on a separate connection, so two in flight can reach the server in
//! either order; and the server stores messages in the order they arrive.
//! Sending the next only once the previous one has its answer keeps a quick
//! burst ("two", "three") in the order it was typed, for everyone. It costs
//! a message one round trip per message ahead of it, which typing does not
//! notice. A failed send does not hold the ones behind it; its Retry joins
//! the back of the line.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::thread::LocalKey;

use leptos::task::spawn_local;

type Job = Pin<Box<dyn Future<Output = ()>>>;

/// The jobs waiting for their turn, and whether a task is running them.
#[derive(Default)]
struct Line {
    waiting: VecDeque<Job>,
    running: bool,
}

impl Line {
    /// Queues `job`; true when nothing runs the line, so the caller starts it.
    fn push(&mut self, job: Job) -> bool {
        self.waiting.push_back(job);
        !std::mem::replace(&mut self.running, true)
    }

    /// The next job; with none left, the line stops running.
    fn next(&mut self) -> Option<Job> {
        let job = self.waiting.pop_front();
        self.running = job.is_some();
        job
    }
}

thread_local! {
    static OUTBOX: RefCell<Line> = RefCell::default();
}

/// Runs `send` once every send queued before it has finished.
pub fn in_turn(send: impl Future<Output = ()> + 'static) {
    if OUTBOX.with_borrow_mut(|line| line.push(Box::pin(send))) {
        spawn_local(run(&OUTBOX));
    }
}

/// Runs the line's jobs one after another until it is empty.
async fn run(line: &'static LocalKey<RefCell<Line>>) {
    while let Some(job) = line.with_borrow_mut(Line::next) {
        job.await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::{Context, Poll};

    use futures_util::task::noop_waker_ref;

    use super::*;

    thread_local! {
        static LINE: RefCell<Line> = RefCell::default();
    }

    /// A job that logs its name when it starts and finishes when `open` is set.
    fn job(name: &'static str, log: &Rc<RefCell<Vec<&'static str>>>, open: &Rc<Cell<bool>>) -> Job {
        let (log, open) = (log.clone(), open.clone());
        Box::pin(async move {
            log.borrow_mut().push(name);
            std::future::poll_fn(|_| {
                if open.get() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        })
    }

    #[test]
    fn one_job_at_a_time_in_the_order_queued_and_one_runner() {
        let log = Rc::default();
        let open = Rc::new(Cell::new(false));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(LINE.with_borrow_mut(|l| l.push(job("one", &log, &open))));
        let mut runner = Box::pin(run(&LINE));
        assert!(runner.as_mut().poll(&mut cx).is_pending());
        // Queued while "one" is out: no second runner, and they wait.
        assert!(!LINE.with_borrow_mut(|l| l.push(job("two", &log, &open))));
        assert!(!LINE.with_borrow_mut(|l| l.push(job("three", &log, &open))));
        assert!(runner.as_mut().poll(&mut cx).is_pending());
        assert_eq!(*log.borrow(), ["one"]);
        open.set(true);
        assert!(runner.as_mut().poll(&mut cx).is_ready());
        assert_eq!(*log.borrow(), ["one", "two", "three"]);
        // Empty again: the next push starts a runner.
        assert!(LINE.with_borrow_mut(|l| l.push(job("four", &log, &open))));
    }
}
