//! `when` conditions: CEL expressions over `agent`, `action`, `proposal` and `now`.
//!
//! CEL finds a missing variable or field only when it evaluates it (and short-circuiting can
//! hide that), so every condition is checked when it is loaded: it must parse, name only known
//! roots and known fields (`proposal.params.*` and `proposal.metadata.*` are free-form), and
//! not be obviously non-boolean. What still fails at evaluation is handled by the caller, failing
//! closed.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Context, Env, Program, Value};

/// A compiled, checked condition.
pub struct Condition {
    pub source: String,
    program: Program,
    /// The facts it reads: `proposal.params`, `action.id`, or `proposal.*` when it uses a root
    /// whole. Facts no condition reads are not built for evaluation.
    pub uses: BTreeSet<String>,
    /// The action ids the condition can be true for at all, when it says so in a form the
    /// loader recognises (see [`action_guard`]): for any other action it is false without
    /// evaluating.
    pub actions: Option<ActionGuard>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// The fields of `proposal` a condition may name.
pub const PROPOSAL_FIELDS: [&str; 10] = [
    "action",
    "summary",
    "rationale",
    "params",
    "changes",
    "data_classes",
    "target",
    "requested_by",
    "evidence",
    "metadata",
];

/// Names a condition may use at the top level.
pub const ROOTS: [&str; 4] = ["agent", "action", "proposal", "now"];

/// What a known field holds, as far as the checker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    NotBool,
    /// A free-form map, or a value whose type is not known in advance.
    Any,
}

/// Resolves a field path against the shape of the facts given to conditions.
fn field_kind(path: &[&str]) -> Result<Kind, String> {
    use Kind::*;
    // Names the path up to the first unknown segment, at `depth`.
    let unknown = |depth: usize, known: &[&str]| {
        Err(format!(
            "unknown field `{}` (known: {})",
            path[..=depth.min(path.len() - 1)].join("."),
            known.join(", ")
        ))
    };
    const AGENT: &[&str] = &["id", "owner", "mode", "description"];
    const ACTION: &[&str] = &["id", "impact", "data", "reversible", "autonomy"];
    const PROPOSAL: &[&str] = &PROPOSAL_FIELDS;
    const TARGET: &[&str] = &["system", "type", "id", "url"];
    match path {
        [_] => Ok(NotBool),
        ["agent", f] if AGENT.contains(f) => Ok(NotBool),
        ["agent", ..] => unknown(1, AGENT),
        ["action", "reversible"] => Ok(Bool),
        ["action", f] if ACTION.contains(f) => Ok(NotBool),
        ["action", ..] => unknown(1, ACTION),
        ["proposal", "params" | "metadata", ..] => Ok(Any),
        ["proposal", "target"] => Ok(NotBool),
        ["proposal", "target", f] if TARGET.contains(f) => Ok(NotBool),
        ["proposal", "target", ..] => unknown(2, TARGET),
        ["proposal", f] if PROPOSAL.contains(f) => Ok(NotBool),
        ["proposal", ..] => unknown(1, PROPOSAL),
        ["now", ..] => Err("`now` is a timestamp and has no fields".into()),
        _ => unknown(0, &ROOTS),
    }
}

/// CEL's own identifiers that may appear bare (type names in `type(x) == int`).
const TYPE_NAMES: [&str; 10] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Functions and operators whose result is never a boolean.
const NON_BOOLEAN_CALLS: [&str; 14] = [
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "-_",
    "size",
    "double",
    "int",
    "uint",
    "string",
    "timestamp",
    "duration",
    "_[_]",
];

impl Condition {
    pub fn compile(env: &Env, source: &str) -> Result<Self, String> {
        // Parse errors are not Send: turn them into text at once.
        let program = env
            .compile(source)
            .map_err(|e| format!("does not compile: {e}"))?;
        let root = program.expression();
        let mut scope: Scope = Vec::new();
        let mut uses = BTreeSet::new();
        check(root, &mut scope, &mut uses)?;
        check_boolean(root)?;
        let actions = action_guard(root);
        Ok(Self {
            source: source.to_owned(),
            program,
            uses,
            actions,
        })
    }

    /// False at once when an action guard excludes `action`; otherwise the condition's value.
    pub fn evaluate_for(&self, action: &str, context: &Context) -> Result<bool, String> {
        match &self.actions {
            Some(guard) if !guard.admits(action) => Ok(false),
            _ => self.evaluate(context),
        }
    }

    /// Evaluates against `context`. A non-boolean result is an error, like a failed evaluation.
    pub fn evaluate(&self, context: &Context) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("returned {:?}, not a boolean", other.type_of())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The field path of a chain such as `proposal.target.system`, if `expr` is one.
fn chain(expr: &IdedExpr) -> Option<Vec<&str>> {
    match &expr.expr {
        Expr::Ident(name) => Some(vec![name.as_str()]),
        Expr::Select(select) => {
            let mut path = chain(&select.operand)?;
            path.push(&select.field);
            Some(path)
        }
        _ => None,
    }
}

/// Every identifier is a root, a comprehension variable in scope or a type name; every field
/// chain from a root exists.
/// Comprehension variables in scope, with the fields of what they range over when known (an
/// element of `proposal.changes` has `path`, `before`, `after`).
type Scope = Vec<(String, Option<&'static [&'static str]>)>;

const CHANGE_FIELDS: &[&str] = &["path", "before", "after"];
const EVIDENCE_FIELDS: &[&str] = &["label", "url", "excerpt"];

fn in_scope(scope: &Scope, name: &str) -> bool {
    scope.iter().any(|(v, _)| v == name)
}

/// The allowed values of a text field that holds one of a fixed set.
fn allowed_values(path: &[&str]) -> Option<&'static [&'static str]> {
    match path {
        ["agent", "mode"] => Some(&["active", "draft_only", "paused"]),
        ["action", "impact"] => Some(&["low", "medium", "high"]),
        ["action", "autonomy"] => Some(&["read_only", "draft_only", "approval", "autonomous"]),
        ["action", "data"] | ["proposal", "data_classes"] => {
            Some(&["pii", "financial", "health", "contractual", "confidential"])
        }
        _ => None,
    }
}

/// Fields that always hold text.
fn is_text(path: &[&str]) -> bool {
    matches!(
        path,
        ["agent", _]
            | ["action", "id" | "impact" | "autonomy"]
            | [
                "proposal",
                "action" | "summary" | "rationale" | "requested_by"
            ]
            | ["proposal", "target", _]
    )
}

/// Comparisons that can never be true (a value outside a fixed set) or never succeed (text
/// against a number) are mistakes, caught at load rather than failing closed on every proposal.
fn check_literals(call: &cel::common::ast::CallExpr, scope: &Scope) -> Result<(), String> {
    fn root_chain<'e>(e: &'e IdedExpr, scope: &Scope) -> Option<Vec<&'e str>> {
        chain(e).filter(|p| ROOTS.contains(&p[0]) && !in_scope(scope, p[0]))
    }
    let root_chain = |e| root_chain(e, scope);
    let text = |e: &IdedExpr| match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.to_string()),
        _ => None,
    };
    let number = |e: &IdedExpr| {
        matches!(
            &e.expr,
            Expr::Literal(LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_))
        )
    };
    let check_value = |path: &[&str], value: &str| match allowed_values(path) {
        Some(allowed) if !allowed.contains(&value) => Err(format!(
            "`{}` is never {value:?} (it is one of {})",
            path.join("."),
            allowed.join(", ")
        )),
        _ => Ok(()),
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        ("_==_" | "_!=_", [a, b]) => {
            for (field, literal) in [(a, b), (b, a)] {
                if let (Some(path), Some(value)) = (root_chain(field), text(literal)) {
                    check_value(&path, &value)?;
                }
            }
            Ok(())
        }
        ("@in", [item, list]) => {
            // "pii" in action.data
            if let (Some(value), Some(path)) = (text(item), root_chain(list)) {
                check_value(&path, &value)?;
            }
            // action.impact in ["high", "critical"]
            if let (Some(path), Expr::List(values)) = (root_chain(item), &list.expr) {
                for value in values.elements.iter().filter_map(text) {
                    check_value(&path, &value)?;
                }
            }
            Ok(())
        }
        ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
            for (field, literal) in [(a, b), (b, a)] {
                if let Some(path) = root_chain(field)
                    && is_text(&path)
                    && number(literal)
                {
                    return Err(format!(
                        "compares `{}`, which is text, with a number",
                        path.join(".")
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Long for a reason: one recursive walk over CEL's expression kinds, an arm per kind, each
/// saying which fields that kind reads and what it may not do; split by arm, the walk would be
/// spread over as many functions that each recurse back here.
fn check(expr: &IdedExpr, scope: &mut Scope, uses: &mut BTreeSet<String>) -> Result<(), String> {
    match &expr.expr {
        Expr::Ident(name) => {
            if ROOTS.contains(&name.as_str()) && !in_scope(scope, name) {
                // A root used whole (passed to a function, compared…): all of it is needed.
                uses.insert(format!("{name}.*"));
                Ok(())
            } else if in_scope(scope, name) || TYPE_NAMES.contains(&name.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "unknown variable `{name}` (use {})",
                    ROOTS.join(", ")
                ))
            }
        }
        Expr::Select(select) => match chain(expr) {
            Some(path) if ROOTS.contains(&path[0]) && !in_scope(scope, path[0]) => {
                field_kind(&path)?;
                uses.insert(format!("{}.{}", path[0], path[1]));
                Ok(())
            }
            // A field of a comprehension variable whose elements are known: check it too.
            Some(path) => match scope.iter().rev().find(|(v, _)| v == path[0]) {
                Some((var, Some(fields))) if !fields.contains(&path[1]) => Err(format!(
                    "unknown field `{var}.{}` (an element here has: {})",
                    path[1],
                    fields.join(", ")
                )),
                _ => check(&select.operand, scope, uses),
            },
            None => check(&select.operand, scope, uses),
        },
        // `proposal["parms"]`, `proposal.?parms`, `proposal[?"parms"]` name a field as surely as
        // `proposal.parms`: check them the same way.
        Expr::Call(call)
            if matches!(call.func_name.as_str(), "_[_]" | "_[?_]" | "_?._")
                && let [operand, field] = call.args.as_slice()
                && let Expr::Literal(LiteralValue::String(field)) = &field.expr
                && let Some(mut path) = chain(operand)
                && ROOTS.contains(&path[0])
                && !in_scope(scope, path[0]) =>
        {
            path.push(field.as_ref());
            field_kind(&path)?;
            uses.insert(format!("{}.{}", path[0], path[1]));
            Ok(())
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check(target, scope, uses)?;
            }
            call.args
                .iter()
                .try_for_each(|arg| check(arg, scope, uses))?;
            check_literals(call, scope)
        }
        Expr::List(list) => list.elements.iter().try_for_each(|e| check(e, scope, uses)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                check(&e.key, scope, uses).and_then(|()| check(&e.value, scope, uses))
            }
            EntryExpr::StructField(f) => check(&f.value, scope, uses),
        }),
        Expr::Struct(s) => s.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                check(&e.key, scope, uses).and_then(|()| check(&e.value, scope, uses))
            }
            EntryExpr::StructField(f) => check(&f.value, scope, uses),
        }),
        Expr::Comprehension(c) => {
            check(&c.iter_range, scope, uses)?;
            let added = 2 + usize::from(c.iter_var2.is_some());
            let elements = match chain(&c.iter_range).as_deref() {
                Some(["proposal", "changes"]) => Some(CHANGE_FIELDS),
                Some(["proposal", "evidence"]) => Some(EVIDENCE_FIELDS),
                _ => None,
            };
            scope.push((c.iter_var.clone(), elements));
            scope.push((c.accu_var.clone(), None));
            scope.extend(c.iter_var2.clone().map(|v| (v, None)));
            let result = check(&c.accu_init, scope, uses)
                .and_then(|()| check(&c.loop_cond, scope, uses))
                .and_then(|()| check(&c.loop_step, scope, uses))
                .and_then(|()| check(&c.result, scope, uses));
            scope.truncate(scope.len() - added);
            result
        }
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// One way a condition can require the action id to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

/// The action ids a condition can be true for: any of these patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionGuard(pub Vec<IdPattern>);

impl ActionGuard {
    pub fn admits(&self, action: &str) -> bool {
        self.0.iter().any(|pattern| match pattern {
            IdPattern::Exact(s) => action == s,
            IdPattern::Prefix(s) => action.starts_with(s.as_str()),
            IdPattern::Suffix(s) => action.ends_with(s.as_str()),
            IdPattern::Contains(s) => action.contains(s.as_str()),
        })
    }
}

/// What a condition requires of `action.id`, if that is evident from its shape:
/// `action.id == "x"`, `action.id in ["x", "y"]`, `action.id.startsWith("x")` (and `endsWith`,
/// `contains`); `A && B` takes A's guard, or else B's; `A || B` needs both and takes their union.
/// This is exact, not a heuristic: CEL's `false && x` is false even when `x` fails, so a
/// condition whose guard rejects the action evaluates to false, always.
fn action_guard(expr: &IdedExpr) -> Option<ActionGuard> {
    let Expr::Call(call) = &expr.expr else {
        return None;
    };
    let is_action_id = |e: &IdedExpr| chain(e).is_some_and(|p| p == ["action", "id"]);
    let string = |e: &IdedExpr| match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.to_string()),
        _ => None,
    };
    let one = |pattern: IdPattern| Some(ActionGuard(vec![pattern]));
    match (
        call.func_name.as_str(),
        call.target.as_deref(),
        call.args.as_slice(),
    ) {
        ("_&&_", None, [left, right]) => action_guard(left).or_else(|| action_guard(right)),
        ("_||_", None, [left, right]) => {
            let (mut left, right) = (action_guard(left)?, action_guard(right)?);
            left.0.extend(right.0);
            Some(left)
        }
        ("_==_", None, [left, right]) if is_action_id(left) => {
            one(IdPattern::Exact(string(right)?))
        }
        ("_==_", None, [left, right]) if is_action_id(right) => {
            one(IdPattern::Exact(string(left)?))
        }
        ("@in", None, [left, right]) if is_action_id(left) => match &right.expr {
            Expr::List(list) => list
                .elements
                .iter()
                .map(|e| string(e).map(IdPattern::Exact))
                .collect::<Option<Vec<_>>>()
                .map(ActionGuard),
            _ => None,
        },
        ("startsWith", Some(target), [arg]) if is_action_id(target) => {
            one(IdPattern::Prefix(string(arg)?))
        }
        ("endsWith", Some(target), [arg]) if is_action_id(target) => {
            one(IdPattern::Suffix(string(arg)?))
        }
        ("contains", Some(target), [arg]) if is_action_id(target) => {
            one(IdPattern::Contains(string(arg)?))
        }
        _ => None,
    }
}

/// Refuses conditions that can never be true or false: literals, arithmetic, non-boolean fields.
fn check_boolean(root: &IdedExpr) -> Result<(), String> {
    let not_boolean = |what: &str| Err(format!("returns {what}, not a boolean"));
    match &root.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => Ok(()),
        Expr::Literal(_) => not_boolean("a literal"),
        Expr::List(_) => not_boolean("a list"),
        Expr::Map(_) | Expr::Struct(_) => not_boolean("a map"),
        Expr::Call(call) if NON_BOOLEAN_CALLS.contains(&call.func_name.as_str()) => not_boolean(
            &format!("the result of `{}`", call.func_name.trim_matches('_')),
        ),
        Expr::Call(call) if call.func_name == "_?_:_" && call.args.len() == 3 => {
            check_boolean(&call.args[1]).and_then(|()| check_boolean(&call.args[2]))
        }
        Expr::Comprehension(c) if matches!(c.accu_init.expr, Expr::List(_)) => {
            not_boolean("a list (map or filter)")
        }
        Expr::Ident(_) | Expr::Select(_) => match chain(root) {
            Some(path) if field_kind(&path) == Ok(Kind::NotBool) => {
                not_boolean(&format!("`{}`", path.join(".")))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// CEL's standard library plus its strings extension (`lowerAscii`, `upperAscii`, `trim`,
/// `replace`, `split`, `indexOf`…), built once and shared by every condition and evaluation.
/// (Prefer these to `matches()`: a regular expression is compiled on every evaluation.)
pub fn environment() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension declares no conflicting overloads");
    Arc::new(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(source: &str) -> Result<Condition, String> {
        Condition::compile(&Env::stdlib(), source)
    }

    #[test]
    fn accepts_conditions_over_known_fields() {
        for ok in [
            r#"action.id == "crm.opportunity.update" && double(proposal.params.discount_percent) > 10.0"#,
            r#"has(proposal.params.amount) && proposal.params.amount > 1000"#,
            r#""pii" in proposal.data_classes || "pii" in action.data"#,
            r#"size(proposal.changes) > 50"#,
            r#"proposal.changes.exists(c, c.path.startsWith("contract."))"#,
            r#"!action.reversible"#,
            r#"action.reversible"#,
            r#"proposal.target.system == "salesforce" && agent.mode == "active""#,
            r#"proposal.metadata.anything.goes == 1"#,
            r#"now > timestamp("2026-01-01T00:00:00Z")"#,
        ] {
            compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_bad_conditions_with_a_reason() {
        for (bad, expect) in [
            ("action.id ==", "does not compile"),
            ("actoin.id == 'x'", "unknown variable `actoin`"),
            ("proposal.parms.x == 1", "unknown field `proposal.parms`"),
            (
                "proposal.target.host == 'x'",
                "unknown field `proposal.target.host`",
            ),
            ("action.impact", "not a boolean"),
            ("size(proposal.changes)", "not a boolean"),
            ("1 + 2", "not a boolean"),
            ("'yes'", "not a boolean"),
            ("now.seconds > 1", "no fields"),
            (
                "proposal.changes.exists(c, d.path == 'x')",
                "unknown variable `d`",
            ),
            (
                "proposal.changes.exists(c, has(c.aftr))",
                "unknown field `c.aftr`",
            ),
            ("agent.mode == 'draft-only'", "never \"draft-only\""),
            ("'PII' in action.data", "never \"PII\""),
            (
                "action.impact in ['high', 'critical']",
                "never \"critical\"",
            ),
            ("action.impact > 2", "text, with a number"),
            ("true ? 1 : 2", "not a boolean"),
            ("proposal.changes.map(c, c.path)", "a list"),
            ("proposal['parms'] == 1", "unknown field `proposal.parms`"),
            (
                "proposal.params['amount'] > 1 && agent['colour'] == 'x'",
                "unknown field `agent.colour`",
            ),
        ] {
            let err = compile(bad).unwrap_err();
            assert!(err.contains(expect), "{bad}: {err}");
        }
    }

    #[test]
    fn records_the_facts_used_and_the_action_guard() {
        let c = compile(r#"action.id in ["a.b", "c.d"] && double(proposal.params.x) > 1.0 && "pii" in action.data"#).unwrap();
        assert_eq!(
            c.uses,
            BTreeSet::from([
                "action.id".into(),
                "proposal.params".into(),
                "action.data".into()
            ])
        );
        let guard = c.actions.unwrap();
        assert!(guard.admits("a.b") && guard.admits("c.d") && !guard.admits("a.bc"));
        let c =
            compile(r#"proposal.changes.exists(c, c.path == "x") || action.id == "a.b""#).unwrap();
        assert_eq!(
            c.actions, None,
            "a disjunction with an unguarded side is not a guard"
        );
        let c = compile(r#"action.id.startsWith("access.") || action.id.contains(".access.") || action.id.endsWith(".merge")"#).unwrap();
        let guard = c.actions.unwrap();
        for (action, admitted) in [
            ("access.grant", true),
            ("crm.access.grant", true),
            ("crm.records.merge", true),
            ("crm.lead.tag", false),
        ] {
            assert_eq!(guard.admits(action), admitted, "{action}");
        }
        let c = compile(r#"size(proposal.changes) > 3 && action.id == "a.b""#).unwrap();
        assert!(
            c.actions.unwrap().admits("a.b"),
            "a guard on either side of && counts"
        );
        assert!(c.uses.contains("proposal.changes"));
        let c = compile(r#"size(proposal) > 3 || agent.id == "x""#);
        assert!(c.is_ok());
        assert!(c.unwrap().uses.contains("proposal.*"));
    }

    #[test]
    fn a_guarded_condition_is_false_for_other_actions_without_evaluating() {
        let env = Arc::new(Env::stdlib());
        let context = Context::with_env(env.clone());
        // Evaluating would fail (no variables at all): the guard answers first.
        let c = Condition::compile(&env, r#"action.id == "a.b" && proposal.params.x > 1"#).unwrap();
        assert_eq!(c.evaluate_for("c.d", &context), Ok(false));
        assert!(c.evaluate_for("a.b", &context).is_err());
    }

    #[test]
    fn evaluation_errors_and_non_booleans_are_errors() {
        let env = Arc::new(Env::stdlib());
        let mut context = Context::with_env(env.clone());
        context
            .add_variable("proposal", serde_json::json!({"params": {"n": "text"}}))
            .unwrap();
        let missing = Condition::compile(&env, "proposal.params.amount > 10").unwrap();
        assert!(missing.evaluate(&context).is_err());
        let not_bool = Condition::compile(&env, "proposal.params.n").unwrap();
        assert!(
            not_bool
                .evaluate(&context)
                .unwrap_err()
                .contains("not a boolean")
        );
        let ok = Condition::compile(&env, "proposal.params.n == 'text'").unwrap();
        assert_eq!(ok.evaluate(&context), Ok(true));
    }
}
