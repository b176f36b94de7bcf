//! The loop's batches, one iteration ahead: while step k runs, a second thread cuts the crops
//! and mirrors of iteration k + 1 and normalises them (`step::host_batch`), so the step no
//! longer waits for its input (on a GPU, where a step takes milliseconds, a serial input path
//! would dominate; on a CPU it fills what the step leaves idle).
//!
//! Exactness: the worker owns a copy of the run's random streams and draws from it in the
//! same order as the loop would (indices of source, of target, then a view per image), so the
//! batches are the ones the loop makes itself, bit for bit. With each batch it sends the
//! streams as they stand after drawing it; the loop keeps those, so a checkpoint after step k
//! records the streams of batch k, never of a batch made ahead, and a resume is exact.
//!
//! Only decoded images in host memory are made ahead: images resident on a GPU and cached
//! features are cut by tensor indexing on the loop's thread (cheap, and a `tch::Tensor` is not
//! `Sync`, so it cannot be shared with a worker).

use std::sync::mpsc;
use std::thread;

use anyhow::{anyhow, Result};
use tch::Device;

use crate::config::TrainConfig;
use crate::data::inputs::Inputs;
use crate::data::transfer::Data;
use crate::model::backbone::InputConvention;
use crate::train::checkpoint::Streams;
use crate::train::step::{self, Batch};

/// Where the loop takes its next batch from.
pub enum Feed {
    /// Made on the loop's thread when it is needed.
    Inline,
    /// Made by a worker one batch ahead, with the streams as they stand after it.
    Ahead(mpsc::Receiver<(Batch, Streams)>),
}

impl Feed {
    /// A worker in `scope` that makes the batches of iterations `from..cfg.iterations` from
    /// `streams` (the loop's, as they stand before iteration `from`), when `cfg.prefetch` and
    /// both domains are images in host memory; else `Inline`. The worker stops when the feed is
    /// dropped (the loop ended early) or the last batch is taken.
    pub fn start<'scope, 'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        data: &'env Data,
        cfg: &'env TrainConfig,
        input: InputConvention,
        streams: &Streams,
        from: usize,
        device: Device,
    ) -> Feed {
        let (Inputs::Host(source), Inputs::Host(target)) = (&data.source, &data.target) else {
            return Feed::Inline;
        };
        if !cfg.prefetch || from >= cfg.iterations {
            return Feed::Inline;
        }
        // A rendezvous channel: the worker makes one batch ahead and waits until it is taken.
        let (tx, rx) = mpsc::sync_channel(0);
        let mut streams = streams.clone();
        scope.spawn(move || {
            for _ in from..cfg.iterations {
                let batch = step::host_batch(source, target, cfg, &input, &mut streams, device);
                if tx.send((batch, streams.clone())).is_err() {
                    return; // the loop ended before the last iteration
                }
            }
        });
        Feed::Ahead(rx)
    }

    /// The next iteration's batch; `streams` ends as it stands after drawing it, whichever
    /// thread drew it.
    pub fn next(
        &mut self,
        data: &Data,
        cfg: &TrainConfig,
        input: &InputConvention,
        streams: &mut Streams,
        device: Device,
    ) -> Result<Batch> {
        match self {
            Feed::Inline => Ok(step::next_batch(data, cfg, input, streams, device)),
            Feed::Ahead(rx) => {
                let (batch, after) = rx.recv().map_err(|_| anyhow!("the thread making batches ahead stopped"))?;
                *streams = after;
                Ok(batch)
            }
        }
    }
}
