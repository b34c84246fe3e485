//! Typed refusals: what a check decided, apart from whether it could ask the DB. A check
//! that queries returns the engine's `Checked` (`Result<Ruling<T>, DbError>`) — `Err` is a DB
//! problem (the request waits and is decided again), `Ok(Ruling::Refuse(_))` a refusal
//! recorded as the request's outcome, and `Ok(Ruling::Admit(_))` the value the next step goes
//! on with. Pure: it names no DB type, so the pure decisions (`engine::decide`) use it.

use crate::request::Rejection;

/// What a check decided: go on with a value, or refuse (by default with a [`Rejection`]).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Ruling<T, R = Rejection> {
    /// The check passed; what the next step goes on with.
    Admit(T),
    /// The check refused; why.
    Refuse(R),
}

impl<T, R> Ruling<T, R> {
    /// The admitted value transformed; a refusal kept.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Ruling<U, R> {
        match self {
            Ruling::Admit(v) => Ruling::Admit(f(v)),
            Ruling::Refuse(r) => Ruling::Refuse(r),
        }
    }

    /// As a `Result` (for code that keeps the outcome as one, e.g. a verdict's result).
    pub fn into_result(self) -> Result<T, R> {
        match self {
            Ruling::Admit(v) => Ok(v),
            Ruling::Refuse(r) => Err(r),
        }
    }

    /// The refusal, if it is one.
    pub fn refusal(&self) -> Option<&R> {
        match self {
            Ruling::Admit(_) => None,
            Ruling::Refuse(r) => Some(r),
        }
    }
}

impl<T, R> From<Result<T, R>> for Ruling<T, R> {
    fn from(r: Result<T, R>) -> Self {
        match r {
            Ok(v) => Ruling::Admit(v),
            Err(r) => Ruling::Refuse(r),
        }
    }
}

/// The admitted value of a [`Ruling`] (or of a `Result<_, refusal>`, through `From`); on a
/// refusal, return it from the enclosing `Result<Ruling<_>, _>` function (converted with
/// `Into`).
macro_rules! admit {
    ($decision:expr) => {
        match $crate::engine::ruling::Ruling::from($decision) {
            $crate::engine::ruling::Ruling::Admit(v) => v,
            $crate::engine::ruling::Ruling::Refuse(r) => {
                return Ok($crate::engine::ruling::Ruling::Refuse(r.into()))
            }
        }
    };
}
pub(crate) use admit;

/// Refuse from the enclosing `Result<Ruling<_>, _>` function.
macro_rules! refuse {
    ($refusal:expr) => {
        return Ok($crate::engine::ruling::Ruling::Refuse($refusal.into()))
    };
}
pub(crate) use refuse;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ReasonCode;

    fn checked(n: i32) -> Result<Ruling<i32>, String> {
        let half = admit!(if n % 2 == 0 {
            Ok(n / 2)
        } else {
            Err(Rejection::new(ReasonCode::InvalidValue, "odd"))
        });
        if half > 10 {
            refuse!(Rejection::new(ReasonCode::InvalidValue, "too big"));
        }
        Ok(Ruling::Admit(half))
    }

    #[test]
    fn admit_and_refuse_read_as_decisions() {
        assert!(matches!(checked(4), Ok(Ruling::Admit(2))));
        let odd = checked(3)
            .ok()
            .and_then(|d| d.refusal().map(|r| r.message.clone()));
        assert_eq!(odd.as_deref(), Some("odd"));
        let big = checked(40)
            .ok()
            .and_then(|d| d.refusal().map(|r| r.message.clone()));
        assert_eq!(big.as_deref(), Some("too big"));
        assert_eq!(
            Ruling::<i32>::Admit(1).map(|v| v + 1).into_result().ok(),
            Some(2)
        );
    }
}
