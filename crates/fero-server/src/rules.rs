//! Sync rules for shared data: which bucket a row lives in, who may write it, and which buckets
//! a user may read.
//!
//! A rules file names the *ruled* collections. Every row of a ruled collection lives in exactly
//! one bucket, a string such as `"team:7"`, computed from the row by a CEL expression. A user
//! may read a bucket if and only if it is in the user's readable set
//!
//! ```text
//! R(user) = {"user:<id>", "global"} ∪ access.read(user) ∪ membership grants of the user
//! ```
//!
//! where `access.read` is a CEL expression over the token's claims, and the membership grants
//! are rows of one ruled collection (say `members`) that each grant one user one bucket
//! ([`Rules::grant_of`]; the storage keeps them and hands them back as a list of bucket
//! names). Collections the file does not name are not ruled: their rows stay private to their
//! user, as before rules existed.
//!
//! # The file
//! TOML; every expression is CEL source text (single quotes keep CEL's double quotes readable):
//!
//! ```toml
//! [access]                       # optional
//! read = 'has(user.claims.teams) ? user.claims.teams.map(t, "team:" + string(t)) : []'
//!
//! [membership]                   # optional; all three keys required
//! collection = "members"         # must also have a [collections.members] table
//! user = 'data.user_id'          # CEL -> string: who is granted
//! bucket = '"team:" + string(data.team_id)'  # CEL -> string: the bucket granted
//!
//! [collections.tasks]
//! bucket = '"team:" + string(data.team_id)'  # CEL -> string: the row's bucket (required)
//! write = 'bucket in user.buckets'           # CEL -> bool (optional; this is the default)
//!
//! [collections.members]
//! bucket = '"team:" + string(data.team_id)'
//! write = '"admin" in (has(user.claims.roles) ? user.claims.roles : [])'
//!
//! [collections.notes]
//! bucket = '"user:" + user.id'   # private to its writer
//! ```
//!
//! # Variables
//! | expression | variables |
//! | --- | --- |
//! | `[access].read` | `user` = `{id, claims}` |
//! | `[membership].user`, `[membership].bucket` | `data` |
//! | `[collections.*].bucket` | `data`, `user`, `request` |
//! | `[collections.*].write` | `data`, `user`, `request`, `bucket` |
//!
//! - `data`: the row's JSON object (for a delete, the stored data).
//! - `user`: a map `{id: string, claims: map, buckets: list<string>}`; `claims` are the token's
//!   claims (an empty map when there are none), `buckets` is R(user), sorted.
//! - `request`: a map `{collection: string, id: string, deleted: bool}`.
//! - `bucket`: the bucket the row is written into.
//!
//! Naming a variable that an expression does not have is refused when the file is loaded (so a
//! comprehension variable may not reuse those names either). The expressions cannot do I/O: the
//! interpreter is built without `matches` (regex) and timestamps, and has no function that
//! reaches outside the values above.
//!
//! # Evaluation cost
//! A push evaluates a bucket and a write expression per change. The `user` value is built once
//! per request ([`Rules::user_context`]) and shared by every change of it; a change then costs
//! the conversion to CEL of the row's fields the expression reads (found in its syntax tree
//! when the file is loaded) and the evaluations; the default `write` is a set lookup, without
//! the interpreter. `benches/rules.rs` measures it (about 1.5 µs per change for the worked
//! example's tasks, 2.2 µs with a CEL `write`, on one core of the 2-core development machine).
//!
//! # Examples
//! ```
//! use fero_server::rules::{Principal, Rules};
//! use serde_json::json;
//!
//! let rules = Rules::parse(
//!     r#"
//!     [access]
//!     read = 'has(user.claims.teams) ? user.claims.teams.map(t, "team:" + string(t)) : []'
//!
//!     [collections.tasks]
//!     bucket = '"team:" + string(data.team_id)'
//!     "#,
//!     "rules.toml",
//! )?;
//! let claims = json!({ "teams": [7, 9] });
//! let ada = Principal { id: "ada", claims: &claims };
//! let readable = rules.readable_buckets(&ada, &[])?;
//! assert!(readable.contains("team:7") && readable.contains("user:ada"));
//!
//! let user = rules.user_context(&ada, &readable);
//! let tasks = rules.collection("tasks").ok_or("tasks is ruled")?;
//! let row = json!({ "team_id": 7, "title": "ship it" });
//! let bucket = tasks.bucket_of(&row, &user, "task-1", false)?;
//! assert_eq!(bucket, "team:7");
//! assert!(tasks.may_write(&bucket, &row, &user, "task-1", false)?);
//! assert!(!tasks.may_write("team:8", &row, &user, "task-1", false)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, ExecutionError, Program, Value};
use toml::de::{DeTable, DeValue};

/// The longest bucket name, in bytes. Bucket names are stored and indexed by every backend
/// and sent to devices in positions; the bound keeps both small.
pub const MAX_BUCKET_BYTES: usize = 200;

/// The `write` expression of a collection that does not give one: a user may write a row into
/// any bucket they may read.
pub const DEFAULT_WRITE: &str = "bucket in user.buckets";

/// The bucket every user may read.
pub const GLOBAL_BUCKET: &str = "global";

/// The user whose request is being decided: the token's user id and claims.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The user id (the `UserId` the token maps to).
    pub id: &'a str,
    /// The token's claims: a JSON object, or `Null` when the token carries none (any other
    /// JSON value is taken as no claims too).
    pub claims: &'a serde_json::Value,
}

/// The result of routing a row: the bucket it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// The bucket name (non-empty, at most [`MAX_BUCKET_BYTES`], no U+0000).
    pub bucket: String,
}

/// A rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read the rules file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid rules file; the position points at the offending text.
    #[error("{origin}:{line}:{column}: {key}: {message}")]
    Invalid {
        /// The file name given to [`Rules::parse`] (or the path given to [`Rules::load`]).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The key or table at fault, e.g. `[collections.tasks].bucket`.
        key: String,
        /// What is wrong, and what is expected.
        message: String,
    },
}

impl RulesError {
    /// The key or table at fault, for [`RulesError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            RulesError::Invalid { key, .. } => Some(key),
            RulesError::Read { .. } => None,
        }
    }

    /// The 1-based line and column, for [`RulesError::Invalid`].
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            RulesError::Invalid { line, column, .. } => Some((*line, *column)),
            RulesError::Read { .. } => None,
        }
    }
}

/// A rule could not be evaluated for a row or a user.
///
/// Messages name the rule (its key and source) and what went wrong in terms of types, never
/// the values: no row data and no claims of any user appear in them, so they may be logged
/// and sent to the pushing device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The expression failed while it ran (a missing field, a type mismatch, ...).
    #[error("rule {key} `{expression}`{}: {message}", in_collection(.collection))]
    Evaluation {
        /// The ruled collection, when the rule belongs to one.
        collection: Option<String>,
        /// The rule's key, e.g. `[collections.tasks].bucket`.
        key: String,
        /// The rule's CEL source.
        expression: String,
        /// What went wrong (types and names from the expression only).
        message: String,
    },
    /// The expression yielded a value of the wrong type.
    #[error(
        "rule {key} `{expression}`{} yields {}, expected {expected}",
        in_collection(.collection),
        with_article(.got)
    )]
    WrongType {
        /// The ruled collection, when the rule belongs to one.
        collection: Option<String>,
        /// The rule's key.
        key: String,
        /// The rule's CEL source.
        expression: String,
        /// The expected type, e.g. `a string`.
        expected: &'static str,
        /// The CEL type it yielded, e.g. `int`.
        got: String,
    },
    /// The expression yielded a bucket name (or a granted user id) that is not allowed.
    #[error("rule {key} `{expression}`{} yields {problem}", in_collection(.collection))]
    BadName {
        /// The ruled collection, when the rule belongs to one.
        collection: Option<String>,
        /// The rule's key.
        key: String,
        /// The rule's CEL source.
        expression: String,
        /// Why the name is refused, e.g. `an empty bucket name`.
        problem: &'static str,
    },
}

impl RuleError {
    /// The key of the rule at fault, e.g. `[collections.tasks].write`.
    pub fn key(&self) -> &str {
        match self {
            RuleError::Evaluation { key, .. }
            | RuleError::WrongType { key, .. }
            | RuleError::BadName { key, .. } => key,
        }
    }
}

/// Why a subscription cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The collection's rules define no subscription of that name.
    #[error(
        "collection {collection:?} has no subscription {name:?}; its rules define {}",
        if known.is_empty() { "none (add `[collections.<name>.subscriptions]` to the rules file)".to_owned() } else { known.join(", ") }
    )]
    Unknown {
        /// The collection.
        collection: String,
        /// The name asked for.
        name: String,
        /// The names the rules define.
        known: Vec<String>,
    },
    /// The subscription's expression failed on the parameters given.
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// `an int`, `a string`.
fn with_article(noun: &str) -> String {
    let vowel = noun.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {noun}", if vowel { "an" } else { "a" })
}

fn in_collection(collection: &Option<String>) -> String {
    match collection {
        Some(name) => format!(" (collection {name:?})"),
        None => String::new(),
    }
}

/// The variables an expression may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AccessRead,
    Membership,
    Bucket,
    Write,
    Subscription,
}

impl Kind {
    const ALL_VARIABLES: [&'static str; 5] = ["data", "user", "request", "bucket", "params"];

    fn allows(self, variable: &str) -> bool {
        match self {
            Kind::AccessRead => variable == "user",
            Kind::Membership => variable == "data",
            Kind::Bucket => matches!(variable, "data" | "user" | "request"),
            Kind::Write => variable != "params",
            Kind::Subscription => matches!(variable, "params" | "user"),
        }
    }

    fn available(self) -> &'static str {
        match self {
            Kind::AccessRead => "`user` (id and claims)",
            Kind::Membership => "`data`",
            Kind::Bucket => "`data`, `user` and `request`",
            Kind::Write => "`data`, `user`, `request` and `bucket`",
            Kind::Subscription => "`params` (the subscription's parameters) and `user`",
        }
    }
}

/// One compiled expression and what it refers to.
struct Expr {
    key: String,
    source: String,
    program: Program,
    uses_data: bool,
    /// The top-level fields of `data` the expression reads, when it reads `data` only as
    /// `data.<field>` (or `has(data.<field>)`): a row is converted to CEL with those fields
    /// alone, which is all the expression can observe. `None`: it uses `data` whole.
    data_fields: Option<Vec<(String, Key)>>,
    uses_user: bool,
    uses_request: bool,
    uses_bucket: bool,
    uses_params: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("key", &self.key)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The variables of one evaluation; `None` ones are not set.
#[derive(Default)]
struct Vars<'a> {
    data: Option<&'a serde_json::Value>,
    user: Option<&'a Value>,
    request: Option<(&'a str, &'a str, bool)>,
    bucket: Option<&'a str>,
    params: Option<&'a Value>,
}

impl Expr {
    /// Runs the expression with the variables it names. A panic inside the interpreter (it has
    /// a few unfinished cases, such as a comprehension over a string) becomes an error instead
    /// of taking the request down. The process's panic hook still prints that panic's message
    /// to standard error, and the interpreter's message may show the value (claims or row
    /// data): it reaches the server's log, never a client.
    fn eval(
        &self,
        root: &Context<'static>,
        collection: Option<&str>,
        vars: &Vars<'_>,
    ) -> Result<Value, RuleError> {
        let mut context = root.new_inner_scope();
        if self.uses_data {
            if let Some(data) = vars.data {
                let value = match (&self.data_fields, data) {
                    (Some(fields), serde_json::Value::Object(object)) => {
                        let map: HashMap<Key, Value> = fields
                            .iter()
                            .filter_map(|(name, key)| {
                                object.get(name).map(|v| (key.clone(), json_to_cel(v)))
                            })
                            .collect();
                        Value::Map(Map { map: Arc::new(map) })
                    }
                    _ => json_to_cel(data),
                };
                context.add_variable_from_value("data", value);
            }
        }
        if self.uses_user {
            if let Some(user) = vars.user {
                context.add_variable_from_value("user", user.clone());
            }
        }
        if self.uses_request {
            if let Some((collection, id, deleted)) = vars.request {
                let map: HashMap<Key, Value> = [
                    (key("collection"), string_value(collection)),
                    (key("id"), string_value(id)),
                    (key("deleted"), Value::Bool(deleted)),
                ]
                .into_iter()
                .collect();
                context.add_variable_from_value("request", Value::Map(Map { map: Arc::new(map) }));
            }
        }
        if self.uses_bucket {
            if let Some(bucket) = vars.bucket {
                context.add_variable_from_value("bucket", string_value(bucket));
            }
        }
        if self.uses_params {
            if let Some(params) = vars.params {
                context.add_variable_from_value("params", params.clone());
            }
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| self.program.execute(&context)));
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RuleError::Evaluation {
                collection: collection.map(str::to_owned),
                key: self.key.clone(),
                expression: self.source.clone(),
                message: describe(&error, &self.source),
            }),
            Err(_) => Err(RuleError::Evaluation {
                collection: collection.map(str::to_owned),
                key: self.key.clone(),
                expression: self.source.clone(),
                message: "the CEL interpreter does not support this case (a comprehension \
                          over a value that is not a list or map, or a message literal)"
                    .to_owned(),
            }),
        }
    }

    fn wrong_type(
        &self,
        collection: Option<&str>,
        expected: &'static str,
        got: &Value,
    ) -> RuleError {
        RuleError::WrongType {
            collection: collection.map(str::to_owned),
            key: self.key.clone(),
            expression: self.source.clone(),
            expected,
            got: got.type_of().to_string(),
        }
    }

    fn bad_name(&self, collection: Option<&str>, problem: &'static str) -> RuleError {
        RuleError::BadName {
            collection: collection.map(str::to_owned),
            key: self.key.clone(),
            expression: self.source.clone(),
            problem,
        }
    }

    /// Runs the expression and checks it yields a valid bucket name.
    fn eval_bucket(
        &self,
        root: &Context<'static>,
        collection: Option<&str>,
        vars: &Vars<'_>,
    ) -> Result<String, RuleError> {
        match self.eval(root, collection, vars)? {
            Value::String(name) => {
                if let Some(problem) = bucket_problem(&name) {
                    return Err(self.bad_name(collection, problem));
                }
                Ok(name.as_str().to_owned())
            }
            other => Err(self.wrong_type(collection, "a string (the bucket name)", &other)),
        }
    }
}

/// Why a bucket name is refused, if it is.
fn bucket_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("an empty bucket name")
    } else if name.len() > MAX_BUCKET_BYTES {
        Some("a bucket name longer than 200 bytes")
    } else if name.contains('\0') {
        Some("a bucket name holding U+0000")
    } else {
        None
    }
}

/// A message for an interpreter error that names types and the expression's own names, never
/// a value: the interpreter's own messages print the values involved (row data, claims).
fn describe(error: &ExecutionError, source: &str) -> String {
    // A name is shown only if the expression itself spells it; a key taken from the data is
    // not.
    let name = |name: &str| {
        if source.contains(name) {
            format!(" `{name}`")
        } else {
            String::new()
        }
    };
    match error {
        ExecutionError::InvalidArgumentCount { expected, actual } => {
            format!("wrong number of arguments: expected {expected}, got {actual}")
        }
        ExecutionError::UnsupportedTargetType { target } => {
            format!("unsupported argument of type {}", target.type_of())
        }
        ExecutionError::NotSupportedAsMethod { method, target } => format!(
            "method{} is not supported on {}",
            name(method),
            typed(target)
        ),
        ExecutionError::UnsupportedKeyType(value) => {
            format!("{} cannot be a map key", typed(value))
        }
        ExecutionError::UnexpectedType { got, want } => {
            // `got` is the value's debug form (`String("...")`): keep its variant name only.
            let got: String = got
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            format!(
                "unexpected type: got {}, want {}",
                got.to_lowercase(),
                cel_type(want)
            )
        }
        ExecutionError::NoSuchKey(key) => format!(
            "no such key{} (use has() to test for an optional field)",
            name(key)
        ),
        ExecutionError::UndeclaredReference(reference) => {
            format!("unknown name{}", name(reference))
        }
        ExecutionError::MissingArgumentOrTarget => "missing argument or target".to_owned(),
        ExecutionError::ValuesNotComparable(left, right) => {
            format!("{} cannot be compared to {}", typed(left), typed(right))
        }
        ExecutionError::UnsupportedUnaryOperator(operator, value) => {
            format!("operator {operator} does not apply to {}", typed(value))
        }
        ExecutionError::UnsupportedBinaryOperator(operator, left, right) => format!(
            "operator {operator} does not apply to {} and {}",
            typed(left),
            typed(right)
        ),
        ExecutionError::UnsupportedMapIndex(index) => {
            format!("{} cannot index a map", typed(index))
        }
        ExecutionError::UnsupportedListIndex(index) => {
            format!("{} cannot index a list", typed(index))
        }
        ExecutionError::UnsupportedIndex(value, index) => {
            format!("{} cannot be indexed by {}", typed(value), typed(index))
        }
        ExecutionError::UnsupportedFunctionCallIdentifierType(_) => {
            "unsupported function call".to_owned()
        }
        ExecutionError::UnsupportedFieldsConstruction(_) => {
            "message construction is not supported".to_owned()
        }
        ExecutionError::FunctionError { function, .. } => {
            format!("function{} failed on its argument", name(function))
        }
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "remainder by zero".to_owned(),
        ExecutionError::Overflow(operator, left, right) => format!(
            "overflow in {operator} of {} and {}",
            typed(left),
            typed(right)
        ),
        _ => "evaluation failed".to_owned(),
    }
}

/// A value's CEL type with its article: `an int`, `a map`.
fn typed(value: &Value) -> String {
    with_article(&value.type_of().to_string())
}

/// The CEL name of a Rust type the interpreter wanted (`Arc<String>` is a string).
fn cel_type(rust: &str) -> &str {
    match rust {
        t if t.contains("String") || t.contains("str") => "string",
        "i64" | "i32" => "int",
        "u64" | "u32" => "uint",
        "f64" => "double",
        "bool" => "bool",
        t if t.contains("Vec") || t.contains("List") => "list",
        t if t.contains("Map") => "map",
        other => other,
    }
}

/// What the syntax tree shows about an expression.
#[derive(Default)]
struct Shape {
    /// Top-level fields of `data` read as `data.<field>`.
    data_fields: BTreeSet<String>,
    /// `data` is used some other way (whole, indexed, or rebound by a comprehension).
    data_whole: bool,
    /// A message literal (`Type{field: value}`), which the interpreter cannot evaluate.
    message_literal: bool,
}

impl Shape {
    fn of(expr: &cel_parser::Expression) -> Shape {
        let mut shape = Shape::default();
        shape.visit(expr);
        shape
    }

    fn visit(&mut self, expr: &cel_parser::Expression) {
        use cel_parser::ast::{EntryExpr, Expr as Node};
        match &expr.expr {
            Node::Select(select) => match &select.operand.expr {
                Node::Ident(name) if name == "data" => {
                    self.data_fields.insert(select.field.clone());
                }
                _ => self.visit(&select.operand),
            },
            Node::Ident(name) => self.data_whole |= name == "data",
            Node::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target);
                }
                call.args.iter().for_each(|arg| self.visit(arg));
            }
            Node::Comprehension(c) => {
                let rebinds = c.iter_var == "data"
                    || c.accu_var == "data"
                    || c.iter_var2.as_deref() == Some("data");
                self.data_whole |= rebinds;
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.visit(part);
                }
            }
            Node::List(list) => list.elements.iter().for_each(|e| self.visit(e)),
            Node::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            self.visit(&e.key);
                            self.visit(&e.value);
                        }
                        EntryExpr::StructField(_) => self.message_literal = true,
                    }
                }
            }
            Node::Struct(_) => self.message_literal = true,
            Node::Literal(_) | Node::Unspecified => {}
        }
    }
}

fn key(name: &str) -> Key {
    Key::String(Arc::new(name.to_owned()))
}

fn string_value(text: &str) -> Value {
    Value::String(Arc::new(text.to_owned()))
}

/// A JSON value as a CEL value: objects become maps with string keys, integers that fit
/// become `int` (else `uint`, else `double`).
fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => string_value(s),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(name, value)| (key(name), json_to_cel(value)))
                    .collect(),
            ),
        }),
    }
}

/// The claims as a CEL map (an empty one unless they are a JSON object).
fn claims_to_cel(claims: &serde_json::Value) -> Value {
    match claims {
        serde_json::Value::Object(_) => json_to_cel(claims),
        _ => Value::Map(Map {
            map: Arc::new(HashMap::new()),
        }),
    }
}

/// The `user` value of one request: built once by [`Rules::user_context`] and shared by the
/// bucket and write decisions of every change the request carries.
#[derive(Debug, Clone)]
pub struct UserContext {
    id: String,
    buckets: Arc<BTreeSet<String>>,
    value: Value,
}

impl UserContext {
    /// The `user` variable for `user`, whose readable set is `readable` (as computed by
    /// [`Rules::readable_buckets`]).
    pub fn new(user: &Principal<'_>, readable: &BTreeSet<String>) -> UserContext {
        let buckets: Vec<Value> = readable.iter().map(|b| string_value(b)).collect();
        let map: HashMap<Key, Value> = [
            (key("id"), string_value(user.id)),
            (key("claims"), claims_to_cel(user.claims)),
            (key("buckets"), Value::List(Arc::new(buckets))),
        ]
        .into_iter()
        .collect();
        UserContext {
            id: user.id.to_owned(),
            buckets: Arc::new(readable.clone()),
            value: Value::Map(Map { map: Arc::new(map) }),
        }
    }

    /// The user id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user's readable buckets, R(user).
    pub fn buckets(&self) -> &BTreeSet<String> {
        &self.buckets
    }
}

/// One ruled collection's compiled rules: where its rows live and who may write them.
///
/// Obtained from [`Rules::collection`]; cheap to clone.
#[derive(Clone)]
pub struct CollectionRules {
    name: Arc<str>,
    root: Arc<Context<'static>>,
    bucket: Arc<Expr>,
    write: Option<Arc<Expr>>,
    subscriptions: Arc<BTreeMap<String, Expr>>,
}

impl fmt::Debug for CollectionRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectionRules")
            .field("name", &self.name)
            .field("bucket", &self.bucket.source)
            .field(
                "write",
                &self.write.as_ref().map_or(DEFAULT_WRITE, |w| &w.source),
            )
            .field(
                "subscriptions",
                &self.subscriptions.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CollectionRules {
    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CEL source of the collection's `bucket` expression.
    pub fn bucket_expression(&self) -> &str {
        &self.bucket.source
    }

    /// The CEL source of the collection's `write` expression ([`DEFAULT_WRITE`] when the file
    /// gives none).
    pub fn write_expression(&self) -> &str {
        self.write.as_ref().map_or(DEFAULT_WRITE, |w| &w.source)
    }

    /// The names of the collection's subscriptions (`[collections.<name>.subscriptions]`).
    pub fn subscription_names(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.keys().map(String::as_str)
    }

    /// The buckets the subscription `name` with `params` selects for `user`: its expression
    /// yields one bucket name or a list of them. The caller serves only those of them the user
    /// may read (a subscription narrows the readable set, never widens it).
    ///
    /// # Errors
    /// [`SubscriptionError::Unknown`] when the collection has no subscription `name`;
    /// [`SubscriptionError::Rule`] when its expression fails on these parameters (a missing
    /// parameter, a wrong type), yields neither a string nor a list of strings, or an invalid
    /// bucket name.
    pub fn subscription_buckets(
        &self,
        name: &str,
        params: &BTreeMap<String, serde_json::Value>,
        user: &Principal<'_>,
    ) -> Result<BTreeSet<String>, SubscriptionError> {
        let Some(expr) = self.subscriptions.get(name) else {
            return Err(SubscriptionError::Unknown {
                collection: self.name.to_string(),
                name: name.to_owned(),
                known: self.subscriptions.keys().cloned().collect(),
            });
        };
        let params = Value::Map(Map {
            map: Arc::new(
                params
                    .iter()
                    .map(|(name, value)| (key(name), json_to_cel(value)))
                    .collect(),
            ),
        });
        let user_value = Value::Map(Map {
            map: Arc::new(
                [
                    (key("id"), string_value(user.id)),
                    (key("claims"), claims_to_cel(user.claims)),
                ]
                .into_iter()
                .collect(),
            ),
        });
        let vars = Vars {
            user: Some(&user_value),
            params: Some(&params),
            ..Vars::default()
        };
        let collection = Some(&*self.name);
        let expected = "a string or a list of strings (bucket names)";
        let mut buckets = BTreeSet::new();
        let mut add = |item: &Value| -> Result<(), RuleError> {
            let Value::String(name) = item else {
                return Err(expr.wrong_type(collection, expected, item));
            };
            if let Some(problem) = bucket_problem(name) {
                return Err(expr.bad_name(collection, problem));
            }
            buckets.insert(name.as_str().to_owned());
            Ok(())
        };
        match expr.eval(&self.root, collection, &vars)? {
            Value::List(items) => items.iter().try_for_each(&mut add)?,
            single => add(&single)?,
        }
        Ok(buckets)
    }

    /// The bucket of a row with this `data`, written by `user` (the request's
    /// [`UserContext`]); `id` and `deleted` are the change's row id and whether it deletes.
    /// For a delete, `data` is the stored data of the row.
    ///
    /// # Errors
    /// [`RuleError`] when the `bucket` expression fails, does not yield a string, or yields an
    /// empty name, one over [`MAX_BUCKET_BYTES`], or one holding U+0000.
    pub fn bucket_of(
        &self,
        data: &serde_json::Value,
        user: &UserContext,
        id: &str,
        deleted: bool,
    ) -> Result<String, RuleError> {
        let vars = Vars {
            data: Some(data),
            user: Some(&user.value),
            request: Some((&self.name, id, deleted)),
            bucket: None,
            params: None,
        };
        self.bucket.eval_bucket(&self.root, Some(&self.name), &vars)
    }

    /// [`bucket_of`](Self::bucket_of) as a [`Decision`].
    ///
    /// # Errors
    /// As [`bucket_of`](Self::bucket_of).
    pub fn route(
        &self,
        data: &serde_json::Value,
        user: &UserContext,
        id: &str,
        deleted: bool,
    ) -> Result<Decision, RuleError> {
        self.bucket_of(data, user, id, deleted)
            .map(|bucket| Decision { bucket })
    }

    /// May `user` write this row into `bucket`? Evaluates the collection's `write`
    /// expression; without one, the answer is whether `bucket` is one of the user's readable
    /// buckets (exactly [`DEFAULT_WRITE`], decided without the interpreter).
    ///
    /// # Errors
    /// [`RuleError`] when the `write` expression fails or does not yield a bool.
    pub fn may_write(
        &self,
        bucket: &str,
        data: &serde_json::Value,
        user: &UserContext,
        id: &str,
        deleted: bool,
    ) -> Result<bool, RuleError> {
        let Some(write) = &self.write else {
            return Ok(user.buckets.contains(bucket));
        };
        let vars = Vars {
            data: Some(data),
            user: Some(&user.value),
            request: Some((&self.name, id, deleted)),
            bucket: Some(bucket),
            params: None,
        };
        match write.eval(&self.root, Some(&self.name), &vars)? {
            Value::Bool(allowed) => Ok(allowed),
            other => Err(write.wrong_type(Some(&self.name), "a bool", &other)),
        }
    }
}

#[derive(Debug)]
struct Membership {
    collection: String,
    user: Expr,
    bucket: Expr,
}

struct Inner {
    root: Arc<Context<'static>>,
    access_read: Option<Expr>,
    membership: Option<Membership>,
    collections: BTreeMap<String, CollectionRules>,
}

/// A loaded rules file: compiled expressions per ruled collection, the access rule and the
/// membership rule.
///
/// Cheap to clone (one `Arc`), and safe to share between request handlers.
#[derive(Clone)]
pub struct Rules {
    inner: Arc<Inner>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field(
                "access_read",
                &self.inner.access_read.as_ref().map(|e| &e.source),
            )
            .field("membership", &self.inner.membership)
            .field("collections", &self.inner.collections)
            .finish()
    }
}

// `Rules` is handed to every request handler.
const _: fn() = || {
    fn shared<T: Clone + fmt::Debug + Send + Sync + 'static>() {}
    shared::<Rules>();
    shared::<CollectionRules>();
    shared::<UserContext>();
};

impl Rules {
    /// Parses and compiles a rules file's text; `origin` names it in error messages (a file
    /// name).
    ///
    /// # Errors
    /// [`RulesError::Invalid`], naming the line, column and key, when the text is not TOML,
    /// has an unknown key or a value of the wrong type, misses a required key (`bucket` of a
    /// collection, any key of `[membership]`), names a membership collection that is not
    /// ruled, or holds an expression that does not compile or names a variable it does not
    /// have.
    pub fn parse(text: &str, origin: &str) -> Result<Rules, RulesError> {
        Loader::new(text, origin).load()
    }

    /// Reads and parses a rules file.
    ///
    /// # Errors
    /// [`RulesError::Read`] when the file cannot be read, else as [`parse`](Self::parse).
    pub fn load(path: impl AsRef<Path>) -> Result<Rules, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        Rules::parse(&text, &path.display().to_string())
    }

    /// The rules of a ruled collection; `None` for one the file does not name.
    pub fn collection(&self, name: &str) -> Option<&CollectionRules> {
        self.inner.collections.get(name)
    }

    /// Whether the file names `collection` (its rows live in buckets); other collections keep
    /// their rows private to each user.
    pub fn is_ruled(&self, collection: &str) -> bool {
        self.inner.collections.contains_key(collection)
    }

    /// The ruled collections, by name.
    pub fn collections(&self) -> impl Iterator<Item = &CollectionRules> {
        self.inner.collections.values()
    }

    /// The collection whose rows grant buckets to users, if the file has a `[membership]`.
    pub fn membership_collection(&self) -> Option<&str> {
        self.inner
            .membership
            .as_ref()
            .map(|m| m.collection.as_str())
    }

    /// R(user): `"user:<id>"`, `"global"`, the buckets `[access].read` yields for the user's
    /// claims, and `grants` (the buckets the storage holds membership rows for); sorted and
    /// deduplicated.
    ///
    /// # Errors
    /// [`RuleError`] when `[access].read` fails, does not yield a list of strings, or yields
    /// an invalid bucket name.
    pub fn readable_buckets(
        &self,
        user: &Principal<'_>,
        grants: &[String],
    ) -> Result<BTreeSet<String>, RuleError> {
        let mut buckets = BTreeSet::new();
        buckets.insert(format!("user:{}", user.id));
        buckets.insert(GLOBAL_BUCKET.to_owned());
        if let Some(read) = &self.inner.access_read {
            let map: HashMap<Key, Value> = [
                (key("id"), string_value(user.id)),
                (key("claims"), claims_to_cel(user.claims)),
            ]
            .into_iter()
            .collect();
            let user_value = Value::Map(Map { map: Arc::new(map) });
            let vars = Vars {
                user: Some(&user_value),
                ..Vars::default()
            };
            match read.eval(&self.inner.root, None, &vars)? {
                Value::List(items) => {
                    for item in items.iter() {
                        let Value::String(name) = item else {
                            return Err(read.wrong_type(None, "a list of strings", item));
                        };
                        if let Some(problem) = bucket_problem(name) {
                            return Err(read.bad_name(None, problem));
                        }
                        buckets.insert(name.as_str().to_owned());
                    }
                }
                other => return Err(read.wrong_type(None, "a list of strings", &other)),
            }
        }
        buckets.extend(grants.iter().cloned());
        Ok(buckets)
    }

    /// The `user` value of one request, to pass to [`CollectionRules::bucket_of`] and
    /// [`CollectionRules::may_write`] for each of its changes (building it once per request,
    /// not per change, is what keeps a change's cost low).
    pub fn user_context(&self, user: &Principal<'_>, readable: &BTreeSet<String>) -> UserContext {
        UserContext::new(user, readable)
    }

    /// For a row of the membership collection: the user it grants and the bucket it grants
    /// them. `Ok(None)` when `collection` is not the membership collection (or the file has no
    /// `[membership]`).
    ///
    /// # Errors
    /// [`RuleError`] when `[membership].user` or `[membership].bucket` fails or does not yield
    /// a string, the user is empty, or the bucket name is invalid.
    pub fn grant_of(
        &self,
        collection: &str,
        data: &serde_json::Value,
    ) -> Result<Option<(String, String)>, RuleError> {
        let Some(membership) = &self.inner.membership else {
            return Ok(None);
        };
        if membership.collection != collection {
            return Ok(None);
        }
        let vars = Vars {
            data: Some(data),
            ..Vars::default()
        };
        let root = &self.inner.root;
        let user = match membership.user.eval(root, Some(collection), &vars)? {
            Value::String(user) if user.is_empty() => {
                return Err(membership
                    .user
                    .bad_name(Some(collection), "an empty user id"));
            }
            Value::String(user) => user.as_str().to_owned(),
            other => {
                return Err(membership.user.wrong_type(
                    Some(collection),
                    "a string (the user id)",
                    &other,
                ));
            }
        };
        let bucket = membership
            .bucket
            .eval_bucket(root, Some(collection), &vars)?;
        Ok(Some((user, bucket)))
    }
}

/// A `[collections.<name>]` table as read.
struct ParsedCollection {
    bucket: Expr,
    write: Option<Expr>,
    subscriptions: BTreeMap<String, Expr>,
}

/// A `[membership]` table as read, before the collections are known.
struct ParsedMembership {
    collection: String,
    collection_offset: usize,
    user: Expr,
    bucket: Expr,
}

/// Reads the TOML tree and compiles it, collecting errors so that the first one in the file
/// is reported (the parser's tables are sorted by key, not by position).
struct Loader<'t> {
    text: &'t str,
    origin: &'t str,
    errors: Vec<(usize, RulesError)>,
}

type Spanned<T> = toml::Spanned<T>;

impl<'t> Loader<'t> {
    fn new(text: &'t str, origin: &'t str) -> Loader<'t> {
        Loader {
            text,
            origin,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, offset: usize, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, offset);
        self.errors.push((
            offset,
            RulesError::Invalid {
                origin: self.origin.to_owned(),
                line,
                column,
                key: key.into(),
                message: message.into(),
            },
        ));
    }

    /// The error that comes first in the file.
    fn first_error(mut self) -> Option<RulesError> {
        let first = (0..self.errors.len()).min_by_key(|&i| self.errors[i].0)?;
        Some(self.errors.swap_remove(first).1)
    }

    fn load(mut self) -> Result<Rules, RulesError> {
        let document = match DeTable::parse(self.text) {
            Ok(document) => document,
            Err(error) => {
                let offset = error.span().map_or(0, |span| span.start);
                let key = enclosing_key(self.text, offset);
                let message = format!("TOML syntax error: {}", error.message().trim_end());
                self.error(offset, key, message);
                return Err(self.into_error());
            }
        };
        let mut access_read = None;
        let mut membership = None;
        let mut collections = BTreeMap::new();
        for (name, value) in document.get_ref().iter() {
            match name.get_ref().as_ref() {
                "access" => {
                    if let Some(table) = self.table(value, "[access]") {
                        access_read = self.access(table);
                    }
                }
                "membership" => {
                    if let Some(table) = self.table(value, "[membership]") {
                        membership = self.membership(table, value.span());
                    }
                }
                "collections" => {
                    if let Some(table) = self.table(value, "[collections]") {
                        collections = self.collections(table);
                    }
                }
                other => self.error(
                    name.span().start,
                    other.to_owned(),
                    "unknown key; a rules file has `[access]`, `[membership]` and \
                     `[collections.<name>]` tables",
                ),
            }
        }
        if let Some(parsed) = &membership {
            if !collections.contains_key(parsed.collection.as_str()) {
                let collection = &parsed.collection;
                let message = format!(
                    "the membership collection {collection:?} is not ruled; add a \
                     `{}` table with its `bucket`",
                    collection_key(collection)
                );
                self.error(parsed.collection_offset, "[membership].collection", message);
            }
        }
        if !self.errors.is_empty() {
            return Err(self.into_error());
        }
        let root = Arc::new(Context::default());
        let collections = collections
            .into_iter()
            .map(|(name, parsed)| {
                let rules = CollectionRules {
                    name: Arc::from(name.as_str()),
                    root: Arc::clone(&root),
                    bucket: Arc::new(parsed.bucket),
                    write: parsed.write.map(Arc::new),
                    subscriptions: Arc::new(parsed.subscriptions),
                };
                (name, rules)
            })
            .collect();
        let membership = membership.map(|parsed| Membership {
            collection: parsed.collection,
            user: parsed.user,
            bucket: parsed.bucket,
        });
        Ok(Rules {
            inner: Arc::new(Inner {
                root,
                access_read,
                membership,
                collections,
            }),
        })
    }

    fn into_error(self) -> RulesError {
        let origin = self.origin.to_owned();
        self.first_error().unwrap_or(RulesError::Invalid {
            origin,
            line: 1,
            column: 1,
            key: "(document)".to_owned(),
            message: "invalid rules file".to_owned(),
        })
    }

    fn table<'v, 'i>(
        &mut self,
        value: &'v Spanned<DeValue<'i>>,
        key: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                let message = format!("must be a table, not {}", with_article(other.type_str()));
                self.error(value.span().start, key, message);
                None
            }
        }
    }

    fn unknown_key(&mut self, name: &Spanned<std::borrow::Cow<'_, str>>, table: &str, known: &str) {
        let key = format!("{table}.{}", bare_or_quoted(name.get_ref()));
        let message = format!("unknown key; `{table}` has {known}");
        self.error(name.span().start, key, message);
    }

    fn access(&mut self, table: &DeTable<'_>) -> Option<Expr> {
        let mut read = None;
        for (name, value) in table.iter() {
            if name.get_ref() == "read" {
                read = self.compile(value, "[access].read", Kind::AccessRead);
            } else {
                self.unknown_key(name, "[access]", "`read`");
            }
        }
        read
    }

    fn membership(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<ParsedMembership> {
        let mut collection = None;
        let mut user = None;
        let mut bucket = None;
        let mut seen = [false; 3];
        for (name, value) in table.iter() {
            match name.get_ref().as_ref() {
                "collection" => {
                    seen[0] = true;
                    match value.get_ref() {
                        DeValue::String(text) => {
                            collection = Some((text.to_string(), value.span().start));
                        }
                        other => {
                            let message = format!(
                                "must be a string naming a ruled collection, not {}",
                                with_article(other.type_str())
                            );
                            self.error(value.span().start, "[membership].collection", message);
                        }
                    }
                }
                "user" => {
                    seen[1] = true;
                    user = self.compile(value, "[membership].user", Kind::Membership);
                }
                "bucket" => {
                    seen[2] = true;
                    bucket = self.compile(value, "[membership].bucket", Kind::Membership);
                }
                _ => self.unknown_key(name, "[membership]", "`collection`, `user` and `bucket`"),
            }
        }
        for (present, missing) in seen.iter().zip(["collection", "user", "bucket"]) {
            if !present {
                let message = format!(
                    "missing `{missing}`; `[membership]` needs `collection`, `user` and `bucket`"
                );
                self.error(span.start, "[membership]", message);
            }
        }
        let (collection, collection_offset) = collection?;
        Some(ParsedMembership {
            collection,
            collection_offset,
            user: user?,
            bucket: bucket?,
        })
    }

    fn collections(&mut self, table: &DeTable<'_>) -> BTreeMap<String, ParsedCollection> {
        let mut collections = BTreeMap::new();
        for (name, value) in table.iter() {
            let table_key = collection_key(name.get_ref());
            if name.get_ref().is_empty() {
                self.error(
                    name.span().start,
                    table_key,
                    "a collection name cannot be empty",
                );
                continue;
            }
            let Some(rules) = self.table(value, &table_key) else {
                continue;
            };
            let mut bucket = None;
            let mut write = None;
            let mut subscriptions = BTreeMap::new();
            let mut has_bucket = false;
            for (key, value) in rules.iter() {
                match key.get_ref().as_ref() {
                    "bucket" => {
                        has_bucket = true;
                        bucket = self.compile(value, format!("{table_key}.bucket"), Kind::Bucket);
                    }
                    "write" => {
                        write = self.compile(value, format!("{table_key}.write"), Kind::Write);
                        // The default, spelled out: decided without the interpreter.
                        if write
                            .as_ref()
                            .is_some_and(|w| w.source.trim() == DEFAULT_WRITE)
                        {
                            write = None;
                        }
                    }
                    "subscriptions" => {
                        let within = format!("{table_key}.subscriptions");
                        if let Some(table) = self.table(value, &within) {
                            for (name, value) in table.iter() {
                                let key = format!("{within}.{}", bare_or_quoted(name.get_ref()));
                                if let Some(expr) = self.compile(value, key, Kind::Subscription) {
                                    subscriptions.insert(name.get_ref().to_string(), expr);
                                }
                            }
                        }
                    }
                    _ => self.unknown_key(key, &table_key, "`bucket`, `write` and `subscriptions`"),
                }
            }
            if !has_bucket {
                let message = "missing `bucket`, the CEL expression that yields a row's bucket, \
                               e.g. `bucket = '\"team:\" + string(data.team_id)'`";
                self.error(name.span().start, table_key, message);
            }
            if let Some(bucket) = bucket {
                collections.insert(
                    name.get_ref().to_string(),
                    ParsedCollection {
                        bucket,
                        write,
                        subscriptions,
                    },
                );
            }
        }
        collections
    }

    /// Compiles the CEL expression held by a string value.
    fn compile(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        key: impl Into<String>,
        kind: Kind,
    ) -> Option<Expr> {
        let key = key.into();
        let span = value.span();
        let DeValue::String(source) = value.get_ref() else {
            let message = format!(
                "must be a string holding a CEL expression, not {}",
                with_article(value.get_ref().type_str())
            );
            self.error(span.start, key, message);
            return None;
        };
        if source.trim().is_empty() {
            self.error(span.start, key, "the CEL expression is empty");
            return None;
        }
        // The parser is generated code; a panic in it must not take the server down.
        let compiled = catch_unwind(AssertUnwindSafe(|| {
            Program::compile(source).map_err(|errors| {
                errors
                    .errors
                    .first()
                    .map(|e| (e.msg.clone(), e.pos))
                    .unwrap_or_else(|| ("invalid expression".to_owned(), (1, 0)))
            })
        }));
        let program = match compiled {
            Ok(Ok(program)) => program,
            Ok(Err((message, position))) => {
                let offset = self.expression_offset(span, source, position);
                self.error(offset, key, format!("CEL syntax error: {message}"));
                return None;
            }
            Err(_) => {
                self.error(
                    span.start,
                    key,
                    "CEL syntax error: the expression cannot be parsed (check its brackets)",
                );
                return None;
            }
        };
        let shape = match cel_parser::Parser::default().parse(source) {
            Ok(tree) => Shape::of(&tree),
            // Compiled above, so this parse succeeds; if not, assume the worst.
            Err(_) => Shape {
                data_whole: true,
                ..Shape::default()
            },
        };
        if shape.message_literal {
            self.error(
                span.start,
                key,
                "message literals (`Type{field: value}`) are not supported; use a map literal",
            );
            return None;
        }
        let references = program.references();
        for variable in Kind::ALL_VARIABLES {
            if references.has_variable(variable) && !kind.allows(variable) {
                let message = format!(
                    "`{variable}` is not available in this expression; it has {}",
                    kind.available()
                );
                self.error(span.start, key.clone(), message);
                return None;
            }
        }
        let data_fields = (!shape.data_whole).then(|| {
            let fields = shape.data_fields.into_iter();
            fields
                .map(|field| (field.clone(), Key::String(Arc::new(field))))
                .collect()
        });
        Some(Expr {
            uses_data: references.has_variable("data"),
            data_fields,
            uses_user: references.has_variable("user"),
            uses_request: references.has_variable("request"),
            uses_bucket: references.has_variable("bucket"),
            uses_params: references.has_variable("params"),
            key,
            source: source.to_string(),
            program,
        })
    }

    /// The byte offset in the file of a position `(line, column)` inside an expression, when
    /// the string is written so that its text maps one to one onto the file (a one-line
    /// literal string, or a basic one without escapes); else the string's start.
    fn expression_offset(
        &self,
        span: Range<usize>,
        source: &str,
        position: (isize, isize),
    ) -> usize {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let verbatim = (raw.starts_with('\'') && !raw.starts_with("'''"))
            || (raw.starts_with('"') && !raw.starts_with("\"\"\"") && !raw.contains('\\'));
        let (line, column) = position;
        if !verbatim || line != 1 || column < 0 || source.contains('\n') {
            return span.start;
        }
        let within = source
            .char_indices()
            .nth(column.unsigned_abs())
            .map_or(source.len(), |(offset, _)| offset);
        span.start + 1 + within
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// For a TOML syntax error: the key being written at `offset`, as far as a line scan can
/// tell (the last `[table]` header above it, and the key its line starts with).
fn enclosing_key(text: &str, offset: usize) -> String {
    let (line_number, _) = line_column(text, offset);
    let mut table = None;
    let mut key = None;
    for (index, line) in text.lines().enumerate().take(line_number) {
        let line = line.trim();
        if line.starts_with('[') && !line.starts_with("[[") {
            if let Some(end) = line.find(']') {
                table = Some(line[..=end].to_owned());
            }
        }
        if index + 1 == line_number {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('[') {
                    key = Some(name.to_owned());
                }
            }
        }
    }
    match (table, key) {
        (Some(table), Some(key)) => format!("{table}.{key}"),
        (Some(table), None) => table,
        (None, Some(key)) => key,
        (None, None) => "(document)".to_owned(),
    }
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn bare_or_quoted(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// `[collections.<name>]`.
fn collection_key(name: &str) -> String {
    format!("[collections.{}]", bare_or_quoted(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TEAMS: &str = include_str!("../examples/rules/teams.toml");

    fn team_rules() -> Rules {
        Rules::parse(TEAMS, "teams.toml").unwrap()
    }

    /// R(user) and the request's user value for `id` with `claims` and no grants.
    fn user(rules: &Rules, id: &str, claims: &serde_json::Value) -> UserContext {
        let principal = Principal { id, claims };
        let readable = rules.readable_buckets(&principal, &[]).unwrap();
        rules.user_context(&principal, &readable)
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_worked_example_routes_rows_and_decides_writes() {
        let rules = team_rules();
        assert!(rules.is_ruled("tasks") && rules.is_ruled("members") && rules.is_ruled("notes"));
        assert!(!rules.is_ruled("contacts"));
        assert!(rules.collection("contacts").is_none());
        assert_eq!(rules.membership_collection(), Some("members"));

        let ada = user(&rules, "ada", &json!({ "teams": [7] }));
        let tasks = rules.collection("tasks").unwrap();
        assert_eq!(tasks.write_expression(), DEFAULT_WRITE);
        let mine = json!({ "team_id": 7, "title": "ship", "done": false });
        let theirs = json!({ "team_id": 8, "title": "plan", "done": true });
        assert_eq!(tasks.bucket_of(&mine, &ada, "t1", false).unwrap(), "team:7");
        assert_eq!(
            tasks.bucket_of(&theirs, &ada, "t2", false).unwrap(),
            "team:8"
        );
        assert_eq!(
            tasks.route(&mine, &ada, "t1", false).unwrap(),
            Decision {
                bucket: "team:7".to_owned()
            }
        );
        assert!(tasks.may_write("team:7", &mine, &ada, "t1", false).unwrap());
        assert!(
            !tasks
                .may_write("team:8", &theirs, &ada, "t2", false)
                .unwrap()
        );
        // A delete is decided on the stored data alike.
        assert!(
            !tasks
                .may_write("team:8", &theirs, &ada, "t2", true)
                .unwrap()
        );

        let notes = rules.collection("notes").unwrap();
        let note = json!({ "text": "hi" });
        assert_eq!(
            notes.bucket_of(&note, &ada, "n1", false).unwrap(),
            "user:ada"
        );
        assert!(
            notes
                .may_write("user:ada", &note, &ada, "n1", false)
                .unwrap()
        );
        assert!(
            !notes
                .may_write("user:bob", &note, &ada, "n1", false)
                .unwrap()
        );

        let members = rules.collection("members").unwrap();
        let membership = json!({ "user_id": "bob", "team_id": 7 });
        assert_eq!(
            members.bucket_of(&membership, &ada, "m1", false).unwrap(),
            "team:7"
        );
        assert!(
            !members
                .may_write("team:7", &membership, &ada, "m1", false)
                .unwrap()
        );
        let admin = user(&rules, "eve", &json!({ "teams": [1], "roles": ["admin"] }));
        assert!(
            members
                .may_write("team:7", &membership, &admin, "m1", false)
                .unwrap()
        );
    }

    #[test]
    fn readable_buckets_join_the_defaults_the_claims_and_the_grants() {
        let rules = team_rules();
        let claims = json!({ "teams": [7, "x", 7] });
        let ada = Principal {
            id: "ada",
            claims: &claims,
        };
        let grants = vec!["team:9".to_owned(), "team:7".to_owned()];
        let readable = rules.readable_buckets(&ada, &grants).unwrap();
        assert_eq!(
            readable,
            set(&["global", "team:7", "team:9", "team:x", "user:ada"])
        );
    }

    #[test]
    fn readable_buckets_without_the_claim_are_the_defaults() {
        let rules = team_rules();
        for claims in [
            json!(null),
            json!({}),
            json!({ "teams": [] }),
            json!([1, 2]),
        ] {
            let ada = Principal {
                id: "ada",
                claims: &claims,
            };
            let readable = rules.readable_buckets(&ada, &[]).unwrap();
            assert_eq!(readable, set(&["global", "user:ada"]), "claims {claims}");
        }
        let plain = Rules::parse("[collections.tasks]\nbucket = '\"global\"'\n", "r").unwrap();
        let claims = json!({ "teams": [7] });
        let ada = Principal {
            id: "ada",
            claims: &claims,
        };
        let grants = vec!["team:3".to_owned()];
        let readable = plain.readable_buckets(&ada, &grants).unwrap();
        assert_eq!(readable, set(&["global", "team:3", "user:ada"]));
    }

    #[test]
    fn the_user_value_carries_id_claims_and_readable_buckets() {
        let rules = Rules::parse(
            r#"
            [collections.c]
            bucket = '"user:" + user.id'
            write = 'user.buckets == ["global", "team:7", "user:ada"] && user.claims.teams == [7] && user.buckets.exists(b, b == bucket)'
            "#,
            "r",
        )
        .unwrap();
        let claims = json!({ "teams": [7] });
        let ada = Principal {
            id: "ada",
            claims: &claims,
        };
        let readable = set(&["global", "team:7", "user:ada"]);
        let context = rules.user_context(&ada, &readable);
        assert_eq!(context.id(), "ada");
        assert_eq!(context.buckets(), &readable);
        let c = rules.collection("c").unwrap();
        let row = json!({});
        assert!(c.may_write("team:7", &row, &context, "1", false).unwrap());
        assert!(!c.may_write("team:8", &row, &context, "1", false).unwrap());
    }

    #[test]
    fn the_request_is_visible_to_bucket_and_write() {
        let rules = Rules::parse(
            r#"
            [collections.log]
            bucket = '"log:" + request.collection + ":" + request.id'
            write = '!request.deleted && bucket.startsWith("log:") && data.n > 1'
            "#,
            "r",
        )
        .unwrap();
        let ada = user(&rules, "ada", &json!(null));
        let log = rules.collection("log").unwrap();
        let row = json!({ "n": 2 });
        let bucket = log.bucket_of(&row, &ada, "e1", false).unwrap();
        assert_eq!(bucket, "log:log:e1");
        assert!(log.may_write(&bucket, &row, &ada, "e1", false).unwrap());
        assert!(!log.may_write(&bucket, &row, &ada, "e1", true).unwrap());
        assert!(
            !log.may_write(&bucket, &json!({ "n": 1 }), &ada, "e1", false)
                .unwrap()
        );
    }

    #[test]
    fn membership_rows_grant_their_user_a_bucket() {
        let rules = team_rules();
        let row = json!({ "user_id": "bob", "team_id": 7, "role": "member" });
        assert_eq!(
            rules.grant_of("members", &row).unwrap(),
            Some(("bob".to_owned(), "team:7".to_owned()))
        );
        assert_eq!(rules.grant_of("tasks", &row).unwrap(), None);
        assert_eq!(rules.grant_of("contacts", &row).unwrap(), None);

        let error = rules
            .grant_of("members", &json!({ "team_id": 7 }))
            .unwrap_err();
        assert_eq!(error.key(), "[membership].user");
        assert!(
            error.to_string().contains("no such key `user_id`"),
            "{error}"
        );
        let error = rules
            .grant_of("members", &json!({ "user_id": 5, "team_id": 7 }))
            .unwrap_err();
        assert!(matches!(error, RuleError::WrongType { ref got, .. } if got == "int"));
        let error = rules
            .grant_of("members", &json!({ "user_id": "", "team_id": 7 }))
            .unwrap_err();
        assert!(matches!(error, RuleError::BadName { .. }), "{error}");

        let plain = Rules::parse("[collections.tasks]\nbucket = '\"global\"'\n", "r").unwrap();
        assert_eq!(plain.membership_collection(), None);
        assert_eq!(plain.grant_of("members", &row).unwrap(), None);
    }

    fn one_collection(bucket: &str, write: &str) -> Rules {
        let text = format!("[collections.c]\nbucket = '{bucket}'\nwrite = '{write}'\n");
        Rules::parse(&text, "r").unwrap()
    }

    #[test]
    fn a_bucket_that_is_not_a_string_is_an_error_naming_the_rule() {
        let rules = one_collection("data.team_id", "true");
        let ada = user(&rules, "ada", &json!(null));
        let error = rules
            .collection("c")
            .unwrap()
            .bucket_of(&json!({ "team_id": 7 }), &ada, "1", false)
            .unwrap_err();
        assert_eq!(
            error,
            RuleError::WrongType {
                collection: Some("c".to_owned()),
                key: "[collections.c].bucket".to_owned(),
                expression: "data.team_id".to_owned(),
                expected: "a string (the bucket name)",
                got: "int".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            "rule [collections.c].bucket `data.team_id` (collection \"c\") yields an int, \
             expected a string (the bucket name)"
        );
    }

    #[test]
    fn a_write_that_is_not_a_bool_is_an_error_naming_the_rule() {
        let rules = one_collection("\"global\"", "data.owner");
        let ada = user(&rules, "ada", &json!(null));
        let error = rules
            .collection("c")
            .unwrap()
            .may_write("global", &json!({ "owner": "ada" }), &ada, "1", false)
            .unwrap_err();
        assert!(
            matches!(&error, RuleError::WrongType { key, expected: "a bool", got, .. }
                if key == "[collections.c].write" && got == "string"),
            "{error:?}"
        );
    }

    #[test]
    fn an_access_rule_that_is_not_a_list_of_strings_is_an_error() {
        for read in ["user.claims.teams", "[1]", "[\"\"]"] {
            let text = format!("[access]\nread = '{read}'\n");
            let rules = Rules::parse(&text, "r").unwrap();
            let claims = json!({ "teams": "seven" });
            let ada = Principal {
                id: "ada",
                claims: &claims,
            };
            let error = rules.readable_buckets(&ada, &[]).unwrap_err();
            assert_eq!(error.key(), "[access].read", "{read}");
            assert!(!error.to_string().contains("seven"), "{error}");
        }
    }

    #[test]
    fn bucket_names_must_be_non_empty_short_and_free_of_nul() {
        let ada_rules = one_collection("data.b", "true");
        let ada = user(&ada_rules, "ada", &json!(null));
        let c = ada_rules.collection("c").unwrap();
        for (name, problem) in [
            (String::new(), "an empty bucket name"),
            ("x".repeat(201), "a bucket name longer than 200 bytes"),
            ("a\0b".to_owned(), "a bucket name holding U+0000"),
        ] {
            let error = c
                .bucket_of(&json!({ "b": name }), &ada, "1", false)
                .unwrap_err();
            assert!(
                matches!(&error, RuleError::BadName { problem: p, .. } if *p == problem),
                "{error:?}"
            );
        }
        let longest = "x".repeat(MAX_BUCKET_BYTES);
        assert_eq!(
            c.bucket_of(&json!({ "b": longest }), &ada, "1", false)
                .unwrap(),
            longest
        );
    }

    #[test]
    fn error_messages_carry_no_row_data() {
        const SECRET: &str = "secret-salary-4711";
        let cases = [
            // string + int: the interpreter's message prints both values.
            ("data.team + 1", json!({ "team": SECRET })),
            // string() of a map: the interpreter's message prints the map.
            ("string(data.nested)", json!({ "nested": { "v": SECRET } })),
            // A key taken from the data, missing from the map.
            ("data[data.k].x", json!({ "k": SECRET, "other": {} })),
            // A comprehension over a string: a panic inside the interpreter.
            ("data.tags.map(t, t)[0]", json!({ "tags": SECRET })),
            // Comparing a string and a map.
            (
                "data.team < data.nested ? \"a\" : \"b\"",
                json!({ "team": SECRET, "nested": { "v": SECRET } }),
            ),
            // A function argument of the wrong type: the interpreter prints the argument.
            ("\"x\".startsWith(data.tags)", json!({ "tags": [SECRET] })),
            // A wrong result type.
            ("data.nested", json!({ "nested": { "v": SECRET } })),
        ];
        for (bucket, row) in cases {
            let rules = one_collection(bucket, "true");
            let ada = user(&rules, "ada", &json!({ "token_secret": SECRET }));
            let error = rules
                .collection("c")
                .unwrap()
                .bucket_of(&row, &ada, "1", false)
                .unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("secret"), "{bucket}: {shown}");
            assert!(
                shown.contains(bucket),
                "{bucket}: names the expression: {shown}"
            );
        }
    }

    #[test]
    fn rules_are_cheap_to_share() {
        let rules = team_rules();
        let copy = rules.clone();
        assert!(Arc::ptr_eq(&rules.inner, &copy.inner));
        let shown = format!("{rules:?}");
        assert!(
            shown.contains("tasks") && shown.contains("members"),
            "{shown}"
        );
    }

    #[test]
    fn an_expression_converts_only_the_data_fields_it_reads() {
        let fields = |bucket: &str| {
            let rules = one_collection(bucket, "true");
            let c = rules.collection("c").unwrap();
            c.bucket
                .data_fields
                .as_ref()
                .map(|f| f.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(
            fields("data.b + string(data.a)"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            fields("has(data.a) ? data.m.k : \"x\""),
            Some(vec!["a".into(), "m".into()])
        );
        assert_eq!(fields("\"global\""), Some(vec![]));
        assert_eq!(fields("string(size(data))"), None);
        assert_eq!(fields("data[\"a\"]"), None);
        assert_eq!(fields("[1].map(data, data)[0]"), None);
    }

    /// Evaluates `bucket` of a one-collection file on `row`, once as loaded and once with the
    /// whole row converted; both outcomes, as text.
    fn pruned_and_whole(bucket: &str, row: &serde_json::Value) -> (String, String) {
        let rules = one_collection(bucket, "true");
        let c = rules.collection("c").unwrap();
        let whole = Expr {
            key: c.bucket.key.clone(),
            source: c.bucket.source.clone(),
            program: Program::compile(&c.bucket.source).unwrap(),
            uses_data: true,
            data_fields: None,
            uses_user: true,
            uses_request: true,
            uses_bucket: false,
            uses_params: false,
        };
        let vars = Vars {
            data: Some(row),
            ..Vars::default()
        };
        let show = |outcome: Result<Value, RuleError>| match outcome {
            Ok(value) => format!("ok {value:?}"),
            Err(error) => format!("error {error}"),
        };
        (
            show(c.bucket.eval(&c.root, Some("c"), &vars)),
            show(whole.eval(&c.root, Some("c"), &vars)),
        )
    }

    fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            (-3i64..3).prop_map(|i| json!(i)),
            "[a-c]{0,2}".prop_map(|s| json!(s)),
        ]
    }

    fn json_row() -> impl Strategy<Value = serde_json::Value> {
        let field = prop_oneof![
            json_leaf(),
            proptest::collection::vec(json_leaf(), 0..3).prop_map(serde_json::Value::Array),
            proptest::option::of(json_leaf()).prop_map(|k| match k {
                Some(k) => json!({ "k": k }),
                None => json!({}),
            }),
        ];
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("m"), Just("l"), Just("z")],
            field,
            0..5,
        )
        .prop_map(|fields| json!(fields))
    }

    proptest! {
        /// Converting only the fields an expression reads never changes what it yields, nor
        /// the error it fails with.
        #[test]
        fn pruned_rows_evaluate_like_whole_rows(row in json_row(), which in 0usize..8) {
            let expressions = [
                "data.a",
                "has(data.a) ? string(data.a) : \"none\"",
                "data.a + data.b",
                "has(data.m.k) ? \"k\" : \"no k\"",
                "data.m.k == 1 ? \"one\" : \"other\"",
                "data.l.exists(x, x == 1) ? \"has one\" : \"no one\"",
                "string(size(data))",
                "data.z == null ? \"null\" : \"set\"",
            ];
            let (pruned, whole) = pruned_and_whole(expressions[which], &row);
            prop_assert_eq!(pruned, whole);
        }
    }

    /// A team id as a claim or a field holds: a JSON number or the same number as a string.
    fn team_json(id: i64, as_string: bool) -> serde_json::Value {
        if as_string {
            json!(id.to_string())
        } else {
            json!(id)
        }
    }

    proptest! {
        /// The bucket of a task row is readable by a user exactly when the user's `teams`
        /// claim holds the row's team (by its decimal form), whatever the ids and encodings;
        /// and the default write agrees.
        #[test]
        fn a_task_is_readable_iff_the_user_is_in_its_team(
            teams in proptest::option::of(proptest::collection::vec((-20i64..20, any::<bool>()), 0..6)),
            row_team in -25i64..25,
            row_as_string in any::<bool>(),
            user_id in "[a-z0-9:]{1,12}",
        ) {
            let rules = team_rules();
            let claims = match &teams {
                Some(teams) => json!({
                    "teams": teams.iter().map(|&(t, s)| team_json(t, s)).collect::<Vec<_>>(),
                }),
                None => json!({ "sub": user_id }),
            };
            let principal = Principal { id: &user_id, claims: &claims };
            let readable = rules.readable_buckets(&principal, &[]).unwrap();
            let context = rules.user_context(&principal, &readable);
            let tasks = rules.collection("tasks").unwrap();
            let row = json!({ "team_id": team_json(row_team, row_as_string), "title": "t" });
            let bucket = tasks.bucket_of(&row, &context, "task", false).unwrap();
            let member = teams.iter().flatten().any(|&(t, _)| t == row_team);
            prop_assert_eq!(readable.contains(&bucket), member);
            prop_assert_eq!(tasks.may_write(&bucket, &row, &context, "task", false).unwrap(), member);
        }
    }
}
