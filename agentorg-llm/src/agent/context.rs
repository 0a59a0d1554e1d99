//! Keeping a conversation within a token budget: when it grows past the
//! budget, its oldest turns (after the role's prompt and the opening
//! message) move out — into a page of the store, for a task, by reference —
//! and one message stands in for them: where they are, and a line for each
//! (the calls made, what came back, clipped).

use crate::Message;

/// A rough count of the tokens of `messages` (four characters a token, as
/// providers' guides estimate English text; tool schemas not counted).
pub(crate) fn estimate_tokens(messages: &[Message]) -> usize {
    let chars: usize = messages
        .iter()
        .map(|m| match m {
            Message::System { content } | Message::User { content } => content.len(),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                content.as_ref().map_or(0, String::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.to_string().len())
                        .sum::<usize>()
            }
            Message::Tool { content, name, .. } => content.len() + name.len(),
        })
        .sum();
    chars / 4 + 4 * messages.len()
}

/// The messages always kept: the role's prompt and the opening message.
const HEAD: usize = 2;

/// `text` on one line, clipped to `max` characters.
fn clip(text: &str, max: usize) -> String {
    let line = text.replace(['\n', '\r'], " ");
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// One line per elided message.
fn digest(messages: &[Message]) -> String {
    let mut lines = Vec::new();
    for m in messages {
        match m {
            Message::System { content } | Message::User { content } => {
                lines.push(format!("- told: {}", clip(content, 160)));
            }
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if let Some(text) = content {
                    lines.push(format!("- you said: {}", clip(text, 160)));
                }
                for c in tool_calls {
                    lines.push(format!(
                        "- you called {}({})",
                        c.name,
                        clip(&c.arguments.to_string(), 160)
                    ));
                }
            }
            Message::Tool {
                content, is_error, ..
            } => lines.push(format!(
                "  {} {}",
                if *is_error { "→ refused:" } else { "→" },
                clip(content, 160)
            )),
        }
    }
    lines.join("\n")
}

/// `text` (a stand-in's lines) within about `max` characters: its oldest
/// lines dropped first, each run of them shown as one `…`; the lines that
/// head each move (where it is kept) go only when dropping every other
/// line was not enough, the oldest first; the newest move's head and the
/// last line always stay.
fn trim(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut len = text.len();
    let mut dropped = vec![false; lines.len()];
    // The details first; then, after many moves, the oldest heads too. The
    // newest move's head and the last line always stay.
    let newest_head = lines.iter().rposition(|l| l.starts_with('('));
    for heads in [false, true] {
        for (i, line) in lines.iter().enumerate().take(lines.len().saturating_sub(1)) {
            if len <= max {
                break;
            }
            if !dropped[i] && Some(i) != newest_head && line.starts_with('(') == heads {
                dropped[i] = true;
                len = len.saturating_sub(line.len() + 1);
            }
        }
    }
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if !dropped[i] {
            out.push(line);
        } else if i == 0 || !dropped[i - 1] {
            out.push("  …");
        }
    }
    out.join("\n")
}

/// The first line of the message standing in for moved turns.
const STAND_IN: &str = "[Earlier messages of this conversation, moved out to keep it short:]";

/// If `messages` is estimated over `budget` tokens, moves the oldest turns
/// out (never the head, never a tool result away from its call, never the
/// last message) until it is about half the budget, and puts in their
/// place a message naming `page` (where they are kept, if anywhere) with a
/// line for each — one stand-in for every move so far, its oldest lines
/// dropped when it grows past a quarter of the budget. Returns what moved
/// out (empty: nothing did).
pub(crate) fn compact(
    messages: &mut Vec<Message>,
    budget: usize,
    page: Option<&str>,
) -> Vec<Message> {
    if messages.len() <= HEAD + 1 || estimate_tokens(messages) <= budget {
        return Vec::new();
    }
    // An earlier stand-in is not moved out again: it is extended.
    let earlier = match messages.get(HEAD) {
        Some(Message::User { content }) if content.starts_with(STAND_IN) => {
            let lines = content[STAND_IN.len()..]
                .trim_start_matches('\n')
                .to_owned();
            messages.remove(HEAD);
            Some(lines)
        }
        _ => None,
    };
    let target = budget / 2;
    let last = messages.len() - 1;
    let head = estimate_tokens(&messages[..HEAD]);
    let mut cut = HEAD;
    // Move the cut forward while what is left is over the target; it may
    // stop only before a message that is not a tool result.
    while cut < last {
        cut += 1;
        let boundary = !matches!(messages[cut], Message::Tool { .. });
        if boundary && head + estimate_tokens(&messages[cut..]) <= target {
            break;
        }
    }
    while cut > HEAD && matches!(messages[cut], Message::Tool { .. }) {
        cut -= 1;
    }
    let moved: Vec<Message> = if cut > HEAD {
        messages.drain(HEAD..cut).collect()
    } else {
        Vec::new()
    };
    let mut lines = earlier.unwrap_or_default();
    if !moved.is_empty() {
        let where_ = page.map_or_else(
            || "not kept".to_owned(),
            |p| format!("kept in the store as `{p}`"),
        );
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(&format!(
            "({} messages, {where_})\n{}",
            moved.len(),
            digest(&moved)
        ));
    }
    if !lines.is_empty() {
        // At most a quarter of the budget (four characters a token).
        lines = trim(&lines, budget);
        messages.insert(
            HEAD,
            Message::User {
                content: format!("{STAND_IN}\n{lines}"),
            },
        );
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolCall;
    use serde_json::json;

    fn long_turns(n: usize) -> Vec<Message> {
        let mut m = vec![
            Message::System {
                content: "prompt".into(),
            },
            Message::User {
                content: "the task".into(),
            },
        ];
        for i in 0..n {
            m.push(Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall::new(format!("c{i}"), "read_task_tree", json!({}))],
            });
            m.push(Message::Tool {
                call_id: format!("c{i}"),
                name: "read_task_tree".into(),
                content: "x".repeat(400),
                is_error: false,
            });
        }
        m
    }

    #[test]
    fn under_budget_nothing_moves() {
        let mut m = long_turns(2);
        assert!(compact(&mut m, 10_000, Some("p")).is_empty());
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn over_budget_old_turns_move_out_whole_and_are_named() {
        let mut m = long_turns(20);
        let before = estimate_tokens(&m);
        let moved = compact(&mut m, 1_000, Some("conversations/t.1"));
        assert!(
            before > 1_000 && estimate_tokens(&m) <= 1_000,
            "{}",
            estimate_tokens(&m)
        );
        assert!(!moved.is_empty());
        // The head stays; the stand-in names the page; a call is never cut
        // from its result.
        assert!(matches!(&m[0], Message::System { .. }));
        assert!(matches!(&m[1], Message::User { content } if content == "the task"));
        assert!(
            matches!(&m[2], Message::User { content } if content.starts_with(STAND_IN) && content.contains("conversations/t.1") && content.contains("you called read_task_tree")),
            "{:?}",
            m[2]
        );
        assert!(matches!(&m[3], Message::Assistant { .. }));
        assert!(matches!(moved.last(), Some(Message::Tool { .. })));
        assert_eq!(moved.len() + m.len() - 1, 42);

        // The next move extends the stand-in instead of moving it out.
        m.extend(long_turns(20).into_iter().skip(HEAD));
        let again = compact(&mut m, 1_000, Some("conversations/t.2"));
        assert!(!again.is_empty());
        assert!(again.iter().all(|x| !matches!(x, Message::User { .. })));
        let Message::User { content } = &m[2] else {
            panic!("no stand-in");
        };
        assert!(
            content.contains("conversations/t.2") && content.matches(STAND_IN).count() == 1,
            "{content}"
        );
        assert!(estimate_tokens(&m) <= 1_000, "{}", estimate_tokens(&m));
    }

    #[test]
    fn trimming_keeps_the_newest_head() {
        let text = "(2 messages, kept in the store as `a`)\n- you called x({})\n  → ok\n(2 messages, kept in the store as `b`)\n- you called y({})\n  → ok";
        let trimmed = trim(text, 10);
        assert!(
            trimmed.contains("`b`") && trimmed.ends_with("→ ok"),
            "{trimmed}"
        );
        assert!(
            !trimmed.contains("`a`") && !trimmed.contains("you called"),
            "{trimmed}"
        );
        assert_eq!(trim(text, 10_000), text);
    }
}
