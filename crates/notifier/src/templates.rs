//! Rendering notifications from templates.
//!
//! Each [`NotificationKind`] has two templates, shipped inside the crate:
//! `<kind>.txt` (blocks `subject` and `body`) and `<kind>.html` (extending `base.html`).
//! HTML templates auto-escape every value; text templates do not. A value a template
//! uses but the context lacks is an error (not a silently empty string), so a template
//! and its planner cannot drift apart unnoticed.

use minijinja::{Environment, UndefinedBehavior};

use crate::outbox::NotificationKind;

/// Subject, text body and HTML body of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line: the email subject, the in-app title.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// A template could not be rendered from the context it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render template {template}: {message}")]
pub struct RenderError {
    /// The template's name.
    pub template: String,
    /// What went wrong.
    pub message: String,
}

const SOURCES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    (
        "order_confirmed.txt",
        include_str!("../templates/order_confirmed.txt"),
    ),
    (
        "order_confirmed.html",
        include_str!("../templates/order_confirmed.html"),
    ),
    (
        "order_cancelled.txt",
        include_str!("../templates/order_cancelled.txt"),
    ),
    (
        "order_cancelled.html",
        include_str!("../templates/order_cancelled.html"),
    ),
    (
        "order_refunded.txt",
        include_str!("../templates/order_refunded.txt"),
    ),
    (
        "order_refunded.html",
        include_str!("../templates/order_refunded.html"),
    ),
    (
        "hold_expired.txt",
        include_str!("../templates/hold_expired.txt"),
    ),
    (
        "hold_expired.html",
        include_str!("../templates/hold_expired.html"),
    ),
    (
        "event_changed.txt",
        include_str!("../templates/event_changed.txt"),
    ),
    (
        "event_changed.html",
        include_str!("../templates/event_changed.html"),
    ),
    (
        "event_cancelled.txt",
        include_str!("../templates/event_cancelled.txt"),
    ),
    (
        "event_cancelled.html",
        include_str!("../templates/event_cancelled.html"),
    ),
    (
        "event_reminder.txt",
        include_str!("../templates/event_reminder.txt"),
    ),
    (
        "event_reminder.html",
        include_str!("../templates/event_reminder.html"),
    ),
];

/// The compiled templates of every notification kind.
pub struct Templates {
    /// The template environment, with every template loaded at construction.
    env: Environment<'static>,
}

impl Templates {
    /// Loads and compiles the built-in templates.
    ///
    /// # Panics
    /// Never for the shipped templates: a syntax error in one of them fails this crate's
    /// tests (`every_kind_renders`) before it can ship.
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Printing a missing value is an error; testing one (`if x`, `x or y`) is not.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        for (name, source) in SOURCES {
            if let Err(e) = env.add_template(name, source) {
                // A broken shipped template is a programming error caught by the tests;
                // keep running and report it per notification rather than abort delivery
                // of every other kind.
                tracing::error!(template = name, error = %e, "built-in template does not compile");
            }
        }
        Self { env }
    }

    /// Renders the subject, text and HTML of a `kind` notification from `context`.
    pub fn render(
        &self,
        kind: NotificationKind,
        context: &serde_json::Value,
    ) -> Result<Rendered, RenderError> {
        let text_name = format!("{}.txt", kind.as_str());
        let html_name = format!("{}.html", kind.as_str());
        let err = |template: &str, e: minijinja::Error| RenderError {
            template: template.to_string(),
            message: format!("{e:#}"),
        };
        let text_tmpl = self
            .env
            .get_template(&text_name)
            .map_err(|e| err(&text_name, e))?;
        let mut captured = text_tmpl
            .render_captured(context)
            .map_err(|e| err(&text_name, e))?;
        let (subject, text) = captured
            .with_state_mut(|state| {
                Ok::<_, minijinja::Error>((
                    state.render_block("subject")?,
                    state.render_block("body")?,
                ))
            })
            .map_err(|e| err(&text_name, e))?;
        let html = self
            .env
            .get_template(&html_name)
            .and_then(|t| t.render(context))
            .map_err(|e| err(&html_name, e))?;
        Ok(Rendered {
            // A header line must not contain line breaks, whatever an event is named.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: text.trim_start().to_string(),
            html,
        })
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!({
            "user": {"id": "u1", "email": "ada@example.com", "name": null},
            "event": {"id": "e1", "name": "Rust <Conf> & co", "venue": "Hall 1",
                       "starts_at": "2030-05-01 19:00 UTC", "ends_at": "2030-05-01 23:00 UTC"},
            "order": {"id": "o1", "amount": "EUR 50.00",
                       "tickets": [{"id": "t1", "seat": "A-1"}, {"id": "t2", "seat": null}],
                       "voided_tickets": ["t1"]},
            "refund": "EUR 50.00",
            "reason": "storm",
        })
    }

    #[test]
    fn every_kind_renders() {
        let t = Templates::new();
        for kind in NotificationKind::ALL {
            let r = t
                .render(kind, &sample())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(!r.subject.is_empty(), "{kind}: empty subject");
            assert!(!r.subject.contains('\n'), "{kind}: multi-line subject");
            assert!(r.text.contains("ada@example.com"), "{kind}: {}", r.text);
            assert!(r.html.contains("<html"), "{kind}");
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let r = Templates::new()
            .render(NotificationKind::OrderConfirmed, &sample())
            .expect("renders");
        assert!(r.html.contains("Rust &lt;Conf&gt; &amp; co"), "{}", r.html);
        assert!(!r.html.contains("<Conf>"));
        assert!(r.text.contains("Rust <Conf> & co"));
        assert!(r.text.contains("seat A-1"));
        assert!(r.text.contains("ticket t2\n"), "{}", r.text);
    }

    #[test]
    fn missing_values_are_errors_not_blanks() {
        let err = Templates::new()
            .render(
                NotificationKind::OrderConfirmed,
                &json!({"user": {"email": "a@b.c"}}),
            )
            .expect_err("event is missing");
        assert_eq!(err.template, "order_confirmed.txt");
    }
}
