//! A rules file is checked whole when it is loaded: a bad one is refused with an error that
//! names the file, the line and column, and the key at fault, so that an operator can fix it
//! before the server starts; a good one (the worked example) loads.

use fero_server::{Rules, RulesError};

/// Parses `text` as `rules.toml`, expecting a refusal; returns (line, column, key, message,
/// the whole message).
fn refused(text: &str) -> (usize, usize, String, String, String) {
    let error = Rules::parse(text, "rules.toml").expect_err("the file must be refused");
    let shown = error.to_string();
    match error {
        RulesError::Invalid {
            origin,
            line,
            column,
            key,
            message,
            ..
        } => {
            assert_eq!(origin, "rules.toml");
            assert!(
                shown.starts_with(&format!("rules.toml:{line}:{column}: {key}: ")),
                "{shown}"
            );
            (line, column, key, message, shown)
        }
        other => panic!("expected an invalid-file error, got {other:?}"),
    }
}

#[test]
fn the_worked_example_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rules/teams.toml");
    let rules = Rules::load(path).unwrap();
    for collection in ["tasks", "members", "notes"] {
        assert!(rules.is_ruled(collection), "{collection}");
    }
    assert!(!rules.is_ruled("contacts"));
    assert_eq!(rules.membership_collection(), Some("members"));
    assert_eq!(
        rules.collection("members").unwrap().write_expression(),
        "\"admin\" in (has(user.claims.roles) ? user.claims.roles : [])"
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let error = Rules::load("/nonexistent/rules.toml").unwrap_err();
    assert!(matches!(error, RulesError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/rules.toml"),
        "{error}"
    );
}

#[test]
fn a_toml_syntax_error_names_its_line_and_key() {
    let text = "[collections.tasks]\n\
                write = 'true'\n\
                bucket = '\"team:\" + string(data.team_id)\n";
    let (line, column, key, message, _) = refused(text);
    assert_eq!(line, 3);
    assert!(column > 1, "points into the line: {column}");
    assert_eq!(key, "[collections.tasks].bucket");
    assert!(message.starts_with("TOML syntax error: "), "{message}");
}

#[test]
fn a_cel_syntax_error_names_its_line_column_and_key() {
    let text = "# tasks\n\
                [collections.tasks]\n\
                bucket = '\"team:\" + string(data.team_id'\n";
    let (line, column, key, message, shown) = refused(text);
    assert_eq!((line, key.as_str()), (3, "[collections.tasks].bucket"));
    // Inside the expression, past its opening quote (column 10).
    assert!(column > 10, "{shown}");
    assert!(message.starts_with("CEL syntax error: "), "{message}");
}

#[test]
fn unknown_keys_are_refused_where_they_are() {
    let (line, column, key, message, _) = refused(
        "[collections.tasks]\n\
         bucket = '\"global\"'\n\
         wirte = 'true'\n",
    );
    assert_eq!((line, column), (3, 1));
    assert_eq!(key, "[collections.tasks].wirte");
    assert!(
        message.contains("`bucket`, `write` and `subscriptions`"),
        "{message}"
    );

    let (line, _, key, _, _) = refused("[acess]\nread = '[]'\n");
    assert_eq!((line, key.as_str()), (1, "acess"));

    let (line, _, key, _, _) = refused("[access]\nread = '[]'\nwrite = '[]'\n");
    assert_eq!((line, key.as_str()), (3, "[access].write"));

    let (line, _, key, _, _) = refused(
        "[membership]\ncollection = \"m\"\nuser = 'data.u'\nbucket = 'data.b'\nrole = 'x'\n\
         [collections.m]\nbucket = '\"global\"'\n",
    );
    assert_eq!((line, key.as_str()), (5, "[membership].role"));
}

#[test]
fn a_collection_without_a_bucket_is_refused() {
    let (line, _, key, message, _) = refused(
        "[collections.tasks]\n\
         bucket = '\"global\"'\n\
         \n\
         [collections.notes]\n\
         write = 'true'\n",
    );
    assert_eq!((line, key.as_str()), (4, "[collections.notes]"));
    assert!(message.contains("missing `bucket`"), "{message}");
}

#[test]
fn a_membership_collection_must_be_ruled() {
    let (line, column, key, message, _) = refused(
        "[membership]\n\
         collection = \"members\"\n\
         user = 'data.user_id'\n\
         bucket = '\"team:\" + string(data.team_id)'\n\
         \n\
         [collections.tasks]\n\
         bucket = '\"team:\" + string(data.team_id)'\n",
    );
    assert_eq!((line, column), (2, 14));
    assert_eq!(key, "[membership].collection");
    assert!(message.contains("\"members\" is not ruled"), "{message}");

    let (line, _, key, message, _) = refused(
        "[membership]\ncollection = \"m\"\nuser = 'data.u'\n[collections.m]\nbucket = 'data.b'\n",
    );
    assert_eq!((line, key.as_str()), (1, "[membership]"));
    assert!(message.contains("missing `bucket`"), "{message}");
}

#[test]
fn an_expression_may_name_only_its_own_variables() {
    let (line, _, key, message, _) =
        refused("[access]\nread = '[\"team:\" + string(data.team)]'\n");
    assert_eq!((line, key.as_str()), (2, "[access].read"));
    assert!(message.contains("`data` is not available"), "{message}");

    let (_, _, key, message, _) = refused("[collections.c]\nbucket = 'bucket'\n");
    assert_eq!(key, "[collections.c].bucket");
    assert!(message.contains("`bucket` is not available"), "{message}");

    let (_, _, key, _, _) = refused(
        "[membership]\ncollection = \"c\"\nuser = 'user.id'\nbucket = 'data.b'\n\
         [collections.c]\nbucket = 'data.b'\n",
    );
    assert_eq!(key, "[membership].user");
}

#[test]
fn values_of_the_wrong_type_are_refused() {
    let (line, _, key, message, _) = refused("[collections.c]\nbucket = 7\n");
    assert_eq!((line, key.as_str()), (2, "[collections.c].bucket"));
    assert!(
        message.contains("must be a string holding a CEL expression"),
        "{message}"
    );

    let (_, _, key, message, _) = refused("collections = 3\n");
    assert_eq!(key, "[collections]");
    assert!(message.contains("must be a table"), "{message}");

    let (_, _, key, message, _) = refused("[collections.c]\nbucket = '  '\n");
    assert_eq!(key, "[collections.c].bucket");
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn the_first_error_in_the_file_is_reported() {
    // Tables are read in key order (`notes` before `tasks`); the report follows the file.
    let (line, _, key, _, _) =
        refused("[collections.tasks]\nbucket = '(('\n[collections.notes]\nbucket = '))'\n");
    assert_eq!((line, key.as_str()), (2, "[collections.tasks].bucket"));
}

#[test]
fn an_expression_the_parser_chokes_on_is_refused_and_parsing_goes_on() {
    // The CEL parser panics on some unbalanced input; the load turns that into an error,
    // and later loads in the same process still work.
    for bad in ["((", "))", "[[", "data.x)"] {
        let text = format!("[collections.c]\nbucket = '{bad}'\n");
        let (line, _, key, message, _) = refused(&text);
        assert_eq!((line, key.as_str()), (2, "[collections.c].bucket"), "{bad}");
        assert!(message.starts_with("CEL syntax error"), "{bad}: {message}");
        let good = Rules::parse("[collections.c]\nbucket = '\"global\"'\n", "ok.toml");
        assert!(good.is_ok(), "after {bad}: {good:?}");
    }
}

#[test]
fn message_literals_are_refused_at_load() {
    let (line, _, key, message, _) =
        refused("[collections.c]\nbucket = 'Bucket{name: \"x\"}.name'\n");
    assert_eq!((line, key.as_str()), (2, "[collections.c].bucket"));
    assert!(message.contains("message literals"), "{message}");
}
