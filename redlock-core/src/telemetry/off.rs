//! The hooks with `tracing` and `metrics` off: each does nothing, and [`Op::finish`] returns the
//! future it is given, so the manager's code compiles to what it was without them.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::LockBackend;
use crate::engine::Rejected;
use crate::error::{Error, Failure, InstanceOutcome, LossReason};
use crate::lease::Lease;
use crate::lock::LockShared;
use crate::runtime::Clock;

/// Nobody can observe anything.
#[inline]
pub(crate) fn watched() -> bool {
    false
}

/// Nothing to remember.
pub(crate) struct Op<'a>(PhantomData<&'a ()>);

impl<'a> Op<'a> {
    #[inline]
    pub(crate) fn acquire(_: &'a dyn Clock, _: &[u8], _: &[u8], _: Duration) -> Self {
        Self(PhantomData)
    }

    #[inline]
    pub(crate) fn extend(_: &'a dyn Clock, _: &'a LockShared, _: Duration) -> Self {
        Self(PhantomData)
    }

    #[inline]
    pub(crate) fn release(_: &'a dyn Clock, _: &'a LockShared) -> Self {
        Self(PhantomData)
    }

    #[inline]
    pub(crate) fn check(_: &'a dyn Clock, _: &'a LockShared) -> Self {
        Self(PhantomData)
    }

    #[inline]
    pub(crate) fn finish<T, F: Future<Output = Result<T, Error>>>(self, call: F) -> F {
        call
    }
}

#[inline]
pub(crate) fn attempt(_: u32, _: &Result<Lease, Rejected>) {}

#[inline]
pub(crate) fn handed_over(_: u32, _: usize) {}

#[inline]
pub(crate) fn fair_yield(_: &dyn Clock, _: &[u8], _: Duration) {}

#[inline]
pub(crate) fn lost(_: &LockShared, _: LossReason, _: Option<&Failure>) {}

#[inline]
pub(crate) fn released(_: &LockShared, _: bool, _: &Result<(), Error>) {}

#[inline]
pub(crate) fn renewal(_: &LockShared, _: &Result<(), Error>) {}

#[inline]
pub(crate) fn background_renewal_ended(_: &LockShared, _: &Result<(), Error>) {}

#[inline]
pub(crate) fn round(_: &[Arc<dyn LockBackend>], _: &[InstanceOutcome]) {}

#[inline]
pub(crate) fn reconnected(_: &str, _: usize) {}
