//! A `tracing` layer that records every span (its fields, whether it closed) and every event,
//! shared by the tests that check what the `tracing` feature reports.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One span as recorded: its name, its fields (all values as text), whether it closed.
#[derive(Debug, Clone)]
pub struct SpanRec {
    pub name: &'static str,
    pub fields: BTreeMap<String, String>,
    pub closed: bool,
}

/// One event: level, message, fields, and the name of the span it happened in.
#[derive(Debug, Clone)]
pub struct EventRec {
    pub level: Level,
    pub message: String,
    pub fields: BTreeMap<String, String>,
    pub span: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct Log {
    pub spans: Vec<SpanRec>,
    pub events: Vec<EventRec>,
}

/// A layer that records everything: span ids are reused by the registry, so each span's index
/// in the log is kept in the span's extensions.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Log>>);

struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut log = self.0.lock().unwrap();
        log.spans.push(SpanRec {
            name: attrs.metadata().name(),
            fields,
            closed: false,
        });
        let index = log.spans.len() - 1;
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(index));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(&Index(index)) = span.extensions().get::<Index>() else {
            return;
        };
        values.record(&mut Fields(&mut self.0.lock().unwrap().spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        self.0.lock().unwrap().events.push(EventRec {
            level: *event.metadata().level(),
            message,
            fields,
            span: ctx.event_span(event).map(|s| s.name()),
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(&Index(index)) = span.extensions().get::<Index>() else {
            return;
        };
        self.0.lock().unwrap().spans[index].closed = true;
    }
}

impl Log {
    pub fn spans(&self, name: &str) -> Vec<&SpanRec> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    pub fn events(&self, message: &str) -> Vec<&EventRec> {
        self.events
            .iter()
            .filter(|e| e.message == message)
            .collect()
    }

    pub fn at_least(&self, level: Level) -> Vec<&EventRec> {
        self.events.iter().filter(|e| e.level <= level).collect()
    }
}

impl SpanRec {
    pub fn get(&self, field: &str) -> &str {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("{} has no field {field}: {:?}", self.name, self.fields))
    }

    pub fn lacks(&self, field: &str) -> bool {
        !self.fields.contains_key(field)
    }
}
