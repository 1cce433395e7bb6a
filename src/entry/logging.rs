//! Where logs go and how they look. On a terminal: text on stderr, warnings only unless
//! `RUST_LOG` asks for more (stdout carries the plan). Under Lambda: the shape Lambda's own
//! runtimes give JSON logs — `timestamp`, `level`, `message` at the top level and the
//! invocation's `requestId` on every line — at the level and in the format the function's
//! `LoggingConfig` sets (`AWS_LAMBDA_LOG_LEVEL`, `AWS_LAMBDA_LOG_FORMAT`); `RUST_LOG` overrides.

use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Installs the process's one subscriber. `in_lambda`: started by the Lambda runtime.
pub fn init(in_lambda: bool) {
    let lookup = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let filter = EnvFilter::new(directives(
        in_lambda,
        lookup("RUST_LOG").as_deref(),
        lookup("AWS_LAMBDA_LOG_LEVEL").as_deref(),
    ));
    let json = in_lambda
        && lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = Registry::default().with(filter);
    if json {
        let format = tracing_subscriber::fmt::layer()
            .event_format(LambdaJson)
            .with_writer(std::io::stderr);
        registry.with(SpanFieldsLayer).with(format).init();
    } else {
        // Colours only for a person at a terminal, never into CloudWatch or a pipe.
        let colour = !in_lambda && std::io::stderr().is_terminal();
        let format = tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr);
        registry.with(format).init();
    }
}

/// The filter: `RUST_LOG` when set; under Lambda the `LoggingConfig` level for this crate (INFO
/// by default: a line per change) and for the runtime's invocation span, which carries the
/// request id; warnings from every other crate.
pub fn directives(in_lambda: bool, rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    if let Some(directives) = rust_log {
        return directives.to_string();
    }
    if !in_lambda {
        return "warn".into();
    }
    let level = match lambda_level.map(str::to_ascii_uppercase).as_deref() {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("WARN") => "warn",
        Some("ERROR" | "FATAL") => "error",
        _ => "info",
    };
    format!("warn,tgb_reconciler={level},lambda_runtime=info")
}

/// The fields of a span, kept on it so every line inside can carry them (`requestId`, and a
/// CloudTrail event's actor and `eventID`).
struct SpanFields(Map<String, Value>);

struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonFields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonFields(fields));
        }
    }
}

/// One JSON object a line: timestamp, level, message, the event's fields, then the fields of
/// the spans it happened in (innermost wins).
struct LambdaJson;

impl<S, N> FormatEvent<S, N> for LambdaJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        // Lambda's level names: TRACE, DEBUG, INFO, WARN, ERROR.
        line.insert(
            "level".into(),
            Value::String(metadata.level().as_str().into()),
        );
        line.insert("message".into(), Value::String(String::new()));
        event.record(&mut JsonFields(&mut line));
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (key, value) in fields {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records fields as JSON values; the event's `message` goes to the top-level `message`.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_follows_rust_log_then_the_lambda_level_then_the_defaults() {
        let cases = [
            ("a terminal logs warnings", false, None, None, "warn"),
            (
                "a terminal ignores the Lambda level",
                false,
                None,
                Some("DEBUG"),
                "warn",
            ),
            (
                "RUST_LOG wins everywhere",
                true,
                Some("debug"),
                Some("ERROR"),
                "debug",
            ),
            (
                "Lambda without a level logs a line per change",
                true,
                None,
                None,
                "warn,tgb_reconciler=info,lambda_runtime=info",
            ),
            (
                "Lambda's level applies to this crate, the request span stays on",
                true,
                None,
                Some("debug"),
                "warn,tgb_reconciler=debug,lambda_runtime=info",
            ),
            (
                "FATAL is Lambda's name for the worst",
                true,
                None,
                Some("FATAL"),
                "warn,tgb_reconciler=error,lambda_runtime=info",
            ),
        ];
        for (name, in_lambda, rust_log, level, expected) in cases {
            assert_eq!(directives(in_lambda, rust_log, level), expected, "{name}");
        }
    }

    #[test]
    fn a_json_line_carries_time_level_message_and_the_fields_of_its_spans() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = Registry::default()
            .with(EnvFilter::new("info"))
            .with(SpanFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(LambdaJson)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _invoke = invoke.enter();
            let cause = tracing::info_span!("cause", actor = "arn:aws:iam::1:user/bob");
            let _cause = cause.enter();
            tracing::info!(cluster = "prod", targets = 3u64, "register");
        });
        let bytes = captured.0.lock().expect("captured").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["message"], "register");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["actor"], "arn:aws:iam::1:user/bob");
        assert_eq!(line["cluster"], "prod");
        assert_eq!(line["targets"], 3);
        let timestamp = line["timestamp"].as_str().expect("timestamp");
        assert!(
            timestamp.ends_with('Z') && timestamp.contains('T'),
            "{timestamp}"
        );
    }
}
