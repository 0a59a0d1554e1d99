//! The org chart: building, loading, validation and queries.

use std::collections::BTreeSet;
use std::path::Path;

use agentorg_core::chart::{
    ChartError, DelegationRoute, OrgChart, OrgChartBuilder, RefusalReason, RoleSpec,
};
use agentorg_core::name::NameErrorReason;
use agentorg_core::tools::{ToolGrant, ToolGrantError};
use proptest::prelude::*;

/// GenBrain's org as shipped with the genbrain example (one copy for both).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/genbrain.toml");

/// GenBrain's org, built in code to match `examples/genbrain.toml`: the
/// pattern suite's own chart (one copy of it in code).
fn genbrain_in_code() -> OrgChart {
    agentorg_core::conformance::patterns::genbrain_chart(&"genbrain".parse().unwrap())
}

fn genbrain_from_file() -> OrgChart {
    OrgChart::from_toml_file(FIXTURE).unwrap()
}

const ALL: [&str; 9] = [
    "founder",
    "ceo",
    "cto",
    "cso",
    "marketing",
    "backend",
    "frontend",
    "devops",
    "nobody",
];

fn names(it: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    it.into_iter().map(|n| n.as_ref().to_owned()).collect()
}

/// A minimal valid chart in code, to break one piece at a time.
fn small() -> OrgChartBuilder {
    OrgChart::builder("o")
        .principal("p")
        .role(RoleSpec::new("a").reports_to("p"))
        .role(RoleSpec::new("b").reports_to("a"))
        .role(RoleSpec::new("c").reports_to("a"))
}

fn code_err(b: OrgChartBuilder) -> ChartError {
    b.build().unwrap_err()
}

/// `HEADER` takes lines 1–2 and a valid `a` under `p` lines 3–4, so a test's
/// own text starts on line 5.
const HEADER: &str = "org = \"o\"\nprincipal = \"p\"\n[roles.a]\nreports_to = \"p\"\n";

fn toml_err(rest: &str) -> ChartError {
    OrgChart::from_toml_str(&format!("{HEADER}{rest}")).unwrap_err()
}

#[test]
fn genbrain_in_code_equals_fixture_in_every_query() {
    let (code, file) = (genbrain_in_code(), genbrain_from_file());
    assert_eq!(code, file);
    assert_eq!(code.org(), file.org());
    assert_eq!(code.principal(), file.principal());
    assert_eq!(code.len(), file.len());
    assert_eq!(
        code.roles().collect::<Vec<_>>(),
        file.roles().collect::<Vec<_>>()
    );
    assert_eq!(
        code.peer_channels().collect::<Vec<_>>(),
        file.peer_channels().collect::<Vec<_>>()
    );
    assert_eq!(
        code.shortcuts().collect::<Vec<_>>(),
        file.shortcuts().collect::<Vec<_>>()
    );
    for a in ALL {
        assert_eq!(code.role(a), file.role(a), "{a}");
        assert_eq!(code.contains(a), file.contains(a), "{a}");
        assert_eq!(code.manager_of(a), file.manager_of(a), "{a}");
        assert_eq!(names(code.reports_of(a)), names(file.reports_of(a)), "{a}");
        assert_eq!(code.chain_of_command(a), file.chain_of_command(a), "{a}");
        assert_eq!(names(code.peers_of(a)), names(file.peers_of(a)), "{a}");
        assert_eq!(code.alternate_of(a), file.alternate_of(a), "{a}");
        assert_eq!(code.tool_grants(a), file.tool_grants(a), "{a}");
        assert_eq!(code.may_address(a), file.may_address(a), "{a}");
        for b in ALL {
            assert_eq!(code.are_peers(a, b), file.are_peers(a, b), "{a} {b}");
            for t in [None, Some("api_change"), Some("other")] {
                assert_eq!(
                    code.delegation_route(a, b, t),
                    file.delegation_route(a, b, t)
                );
                assert_eq!(
                    code.may_receive_task_from(a, b, t),
                    file.may_receive_task_from(a, b, t)
                );
            }
        }
    }
}

#[test]
fn genbrain_structure() {
    let chart = genbrain_from_file();
    assert_eq!(chart.org(), "genbrain");
    assert_eq!(chart.principal(), "founder");
    assert!(chart.is_principal("founder") && !chart.is_principal("ceo"));
    assert!(chart.contains("founder") && chart.contains("devops") && !chart.contains("nobody"));
    assert_eq!(chart.len(), 7);
    assert_eq!(
        names(chart.roles().map(|r| r.name())),
        [
            "backend",
            "ceo",
            "cso",
            "cto",
            "devops",
            "frontend",
            "marketing"
        ]
    );
    assert_eq!(names(chart.reports_of("founder")), ["ceo"]);
    assert_eq!(names(chart.reports_of("ceo")), ["cso", "cto", "marketing"]);
    assert_eq!(
        names(chart.reports_of("cto")),
        ["backend", "devops", "frontend"]
    );
    assert_eq!(chart.reports_of("backend").count(), 0);
    assert_eq!(chart.manager_of("ceo").unwrap(), "founder");
    assert_eq!(chart.manager_of("founder"), None);
    assert_eq!(chart.chain_of_command("devops"), ["cto", "ceo", "founder"]);
    assert_eq!(chart.chain_of_command("ceo"), ["founder"]);
    assert!(chart.chain_of_command("founder").is_empty());
    assert!(chart.chain_of_command("nobody").is_empty());

    let principal = chart.role("founder").unwrap();
    assert_eq!(principal.reports_to(), None);
    assert!(principal.tools().is_empty());
    let backend = chart.role("backend").unwrap();
    assert_eq!(backend.reports_to().unwrap(), "cto");
    assert_eq!(backend.description(), "API implementation, data models");
    assert_eq!(backend.capabilities(), ["api", "data-models"]);
    assert_eq!(backend.alternate().unwrap(), "frontend");
    assert_eq!(chart.alternate_of("backend").unwrap(), "frontend");
    assert_eq!(chart.alternate_of("frontend"), None);

    assert!(chart.are_peers("backend", "frontend") && chart.are_peers("frontend", "backend"));
    assert!(chart.are_peers("cso", "devops"));
    assert!(!chart.are_peers("backend", "cso") && !chart.are_peers("cto", "ceo"));
    assert_eq!(names(chart.peers_of("backend")), ["devops", "frontend"]);
    assert_eq!(names(chart.peers_of("frontend")), ["backend", "marketing"]);
    assert_eq!(chart.peers_of("ceo").count(), 0);
    let channel = chart.peer_channel("marketing", "frontend").unwrap();
    assert_eq!(
        names([channel.roles().0, channel.roles().1]),
        ["frontend", "marketing"]
    );
    assert_eq!(channel.purpose(), Some("brand assets"));
    assert_eq!(chart.peer_channels().count(), 4);

    let shortcut = chart.shortcut("ceo", "backend").unwrap();
    assert_eq!(
        (shortcut.from().as_str(), shortcut.to().as_str()),
        ("ceo", "backend")
    );
    assert_eq!(shortcut.task_types(), ["api_change"]);
    assert!(chart.shortcut("backend", "ceo").is_none());
}

#[test]
fn chart_is_a_cheap_shared_handle() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_send_sync::<OrgChart>();
    let chart = genbrain_in_code();
    let clone = chart.clone();
    assert!(std::ptr::eq(
        chart.role("cto").unwrap(),
        clone.role("cto").unwrap()
    ));
}

#[test]
fn delegation_routes() {
    let chart = genbrain_from_file();
    let ok = |from, to, t| chart.delegation_route(from, to, t);
    assert_eq!(
        ok("founder", "ceo", None),
        Ok(DelegationRoute::DirectReport)
    );
    assert_eq!(
        ok("ceo", "cto", Some("anything")),
        Ok(DelegationRoute::DirectReport)
    );
    assert_eq!(
        ok("cto", "backend", None),
        Ok(DelegationRoute::DirectReport)
    );
    assert_eq!(
        ok("ceo", "backend", Some("api_change")),
        Ok(DelegationRoute::Shortcut)
    );

    let refused = |from, to, t| chart.delegation_route(from, to, t).unwrap_err().reason;
    // The shortcut covers only its task types.
    assert_eq!(
        refused("ceo", "backend", Some("schema_change")),
        RefusalReason::NoRoute
    );
    assert_eq!(refused("ceo", "backend", None), RefusalReason::NoRoute);
    // A role may put a task in its own inbox (a meeting's action item).
    assert_eq!(ok("cto", "cto", None), Ok(DelegationRoute::Own));
    // Not across, not up, not two levels down, not to the principal (nor
    // the principal to itself).
    assert_eq!(refused("backend", "cso", Some("x")), RefusalReason::NoRoute);
    assert_eq!(refused("backend", "cto", None), RefusalReason::NoRoute);
    assert_eq!(refused("founder", "cto", None), RefusalReason::NoRoute);
    assert_eq!(
        refused("ceo", "devops", Some("api_change")),
        RefusalReason::NoRoute
    );
    assert_eq!(refused("founder", "founder", None), RefusalReason::NoRoute);
    assert_eq!(refused("ceo", "founder", None), RefusalReason::NoRoute);
    assert_eq!(refused("nobody", "cto", None), RefusalReason::UnknownSender);
    assert_eq!(
        refused("cto", "nobody", None),
        RefusalReason::UnknownReceiver
    );
    assert_eq!(refused("a.b", "*", None), RefusalReason::UnknownSender);

    let err = chart
        .delegation_route("backend", "cso", Some("x"))
        .unwrap_err();
    assert_eq!(
        (err.from.as_str(), err.to.as_str(), err.task_type.as_deref()),
        ("backend", "cso", Some("x"))
    );
    assert_eq!(
        err.to_string(),
        "`backend` may not delegate to `cso`: `cso` is not a direct report of `backend` \
         and no shortcut lets `backend` delegate `x` tasks to `cso`"
    );
}

#[test]
fn alternates_may_receive_rerouted_tasks() {
    let chart = genbrain_from_file();
    // Direct routes.
    assert!(chart.may_receive_task_from("backend", "cto", None));
    assert!(chart.may_receive_task_from("backend", "ceo", Some("api_change")));
    // `frontend` stands in for `backend`, so it may take what `backend` may.
    assert!(chart.may_receive_task_from("frontend", "ceo", Some("api_change")));
    assert!(!chart.may_receive_task_from("frontend", "ceo", Some("other")));
    assert!(!chart.may_receive_task_from("frontend", "ceo", None));
    // Not the other way round: `backend` is not `frontend`'s alternate.
    assert!(!chart.may_receive_task_from("backend", "marketing", None));
    assert!(!chart.may_receive_task_from("devops", "ceo", Some("api_change")));
    assert!(!chart.may_receive_task_from("cso", "backend", None));
    assert!(!chart.may_receive_task_from("nobody", "cto", None));
}

#[test]
fn may_address_in_the_genbrain_org() {
    let chart = genbrain_from_file();
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| n.parse().unwrap())
            .collect::<BTreeSet<_>>()
    };
    // Its reports, its manager, and `frontend` again as `backend`'s alternate.
    assert_eq!(
        chart.may_address("cto"),
        set(&["backend", "ceo", "devops", "frontend"])
    );
    // Its manager, and `ceo`, which may hand it `api_change` tasks.
    assert_eq!(chart.may_address("backend"), set(&["ceo", "cto"]));
    // `frontend` stands in for `backend`: its results may go back to `ceo`.
    assert_eq!(chart.may_address("frontend"), set(&["ceo", "cto"]));
    assert_eq!(
        chart.may_address("ceo"),
        set(&["backend", "cso", "cto", "founder", "frontend", "marketing"])
    );
    assert_eq!(chart.may_address("founder"), set(&["ceo"]));
    assert_eq!(chart.may_address("marketing"), set(&["ceo"]));
    assert!(chart.may_address("nobody").is_empty());
}

#[test]
fn tool_grants() {
    let chart = genbrain_from_file();
    let grants: Vec<ToolGrant> = ["git.*", "time.*"]
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    assert_eq!(chart.tool_grants("backend"), grants);
    assert!(chart.may_use_tool("backend", "git.commit"));
    assert!(chart.may_use_tool("marketing", "time.get_current_time"));
    assert!(!chart.may_use_tool("marketing", "git.commit"));
    assert!(!chart.may_use_tool("founder", "time.get_current_time"));
    assert!(!chart.may_use_tool("nobody", "time.get_current_time"));
    assert!(chart.tool_grants("nobody").is_empty());

    let one = OrgChart::builder("o")
        .principal("p")
        .role(
            RoleSpec::new("a")
                .reports_to("p")
                .tools(["time.get_current_time"]),
        )
        .build()
        .unwrap();
    assert!(one.may_use_tool("a", "time.get_current_time"));
    assert!(!one.may_use_tool("a", "time.convert_time"));
}

#[test]
fn errors_from_code() {
    use ChartError::*;
    assert!(small().build().is_ok());

    let e = code_err(OrgChart::builder("o").role(RoleSpec::new("a").reports_to("p")));
    assert!(matches!(e, MissingPrincipal));

    let e = code_err(small().role(RoleSpec::new("d").reports_to("x")));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, line: None }
        if role == "x" && referenced_by == "reports_to of `d`")
    );

    let e = code_err(small().role(RoleSpec::new("b").reports_to("p")));
    assert!(matches!(e, Duplicate { what: "role", ref name, line: None } if name == "b"));

    let e = code_err(small().role(RoleSpec::new("d")));
    assert!(matches!(e, NoManager { ref role, line: None } if role == "d"));

    let e = code_err(small().role(RoleSpec::new("p").reports_to("a")));
    assert!(matches!(e, PrincipalReports { ref role, line: None } if role == "p"));

    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").tools(["time.*", "git"])));
    assert!(
        matches!(e, InvalidToolGrant { ref role, source: ToolGrantError::Syntax { .. }, line: None } if role == "d")
    );

    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").alternate("p")));
    assert!(
        matches!(e, InvalidAlternate { ref role, ref alternate, line: None, .. } if role == "d" && alternate == "p")
    );

    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").alternate("d")));
    assert!(matches!(e, SelfChannel { ref role, line: None } if role == "d"));

    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").alternate("zz")));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, .. } if role == "zz" && referenced_by == "alternate of `d`")
    );

    let e = code_err(small().peer("b", "b"));
    assert!(matches!(e, SelfChannel { ref role, .. } if role == "b"));

    let e = code_err(small().peer("b", "zz"));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, .. } if role == "zz" && referenced_by == "peer channel with `b`")
    );

    let e = code_err(small().peer("b", "c").peer_with_purpose("c", "b", "again"));
    assert!(matches!(e, Duplicate { what: "peer channel", ref name, .. } if name == "b <-> c"));

    let e = code_err(small().shortcut("a", "a", ["t"]));
    assert!(matches!(e, SelfChannel { ref role, .. } if role == "a"));

    let e = code_err(small().shortcut("a", "zz", ["t"]));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, .. } if role == "zz" && referenced_by == "shortcut from `a`")
    );

    let e = code_err(small().shortcut("zz", "a", ["t"]));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, .. } if role == "zz" && referenced_by == "shortcut to `a`")
    );

    let e = code_err(small().shortcut("b", "p", ["t"]));
    assert!(matches!(e, DelegatesToPrincipal { ref role, .. } if role == "b"));

    let e = code_err(small().shortcut("p", "b", ["t"]).shortcut("p", "b", ["u"]));
    assert!(matches!(e, Duplicate { what: "shortcut", ref name, .. } if name == "p -> b"));

    let e = code_err(small().shortcut("p", "b", ["Not A Token"]));
    assert!(matches!(e, InvalidName { ref source, .. } if source.name == "Not A Token"));
}

#[test]
fn invalid_names_are_refused() {
    let long = "x".repeat(65);
    for bad in ["a.b", "*", ">", "", long.as_str(), "CTO"] {
        let e = code_err(small().role(RoleSpec::new(bad).reports_to("a")));
        assert!(
            matches!(e, ChartError::InvalidName { ref source, line: None } if source.name == bad),
            "{bad}"
        );
        let e = code_err(small().role(RoleSpec::new("d").reports_to(bad)));
        assert!(
            matches!(e, ChartError::InvalidName { ref source, .. } if source.name == bad),
            "{bad}"
        );
        assert!(
            matches!(
                code_err(small().peer("a", bad)),
                ChartError::InvalidName { .. }
            ),
            "{bad}"
        );
        assert!(
            matches!(
                code_err(OrgChart::builder(bad).principal("p")),
                ChartError::InvalidName { .. }
            ),
            "{bad}"
        );
        assert!(
            matches!(
                code_err(OrgChart::builder("o").principal(bad)),
                ChartError::InvalidName { .. }
            ),
            "{bad}"
        );
    }
    let e = code_err(small().role(RoleSpec::new(long.as_str()).reports_to("a")));
    assert!(
        matches!(e, ChartError::InvalidName { ref source, .. } if source.reason == NameErrorReason::TooLong { len: 65 })
    );
}

#[test]
fn cycles_are_refused() {
    // a -> b -> a, beside a healthy role.
    let e = code_err(
        OrgChart::builder("o")
            .principal("p")
            .role(RoleSpec::new("ok").reports_to("p"))
            .role(RoleSpec::new("a").reports_to("b"))
            .role(RoleSpec::new("b").reports_to("a")),
    );
    assert!(matches!(e, ChartError::Cycle { ref role, line: None } if role == "a"));
    // A longer loop entered from outside: x -> a -> b -> c -> a.
    let e = code_err(
        OrgChart::builder("o")
            .principal("p")
            .role(RoleSpec::new("x").reports_to("a"))
            .role(RoleSpec::new("a").reports_to("b"))
            .role(RoleSpec::new("b").reports_to("c"))
            .role(RoleSpec::new("c").reports_to("a")),
    );
    assert!(
        matches!(e, ChartError::Cycle { ref role, .. } if ["a", "b", "c"].contains(&role.as_str()))
    );
    // A self-report.
    let e = code_err(small().role(RoleSpec::new("d").reports_to("d")));
    assert!(matches!(e, ChartError::Cycle { ref role, .. } if role == "d"));

    // From TOML, with the line of a `reports_to` in the loop.
    let e = toml_err("[roles.x]\nreports_to = \"y\"\n[roles.y]\nreports_to = \"x\"\n");
    assert!(matches!(e, ChartError::Cycle { ref role, line: Some(6) } if role == "x"));
    let e = toml_err("[roles.d]\ndescription = \"me\"\nreports_to = \"d\"\n");
    assert!(matches!(e, ChartError::Cycle { ref role, line: Some(7) } if role == "d"));
}

#[test]
fn errors_from_toml_carry_lines() {
    use ChartError::*;
    // Lines 1-4 are HEADER; the text below starts on line 5.
    let e = toml_err("[roles.b]\nreports_to = \"nobody\"\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(6), .. } if role == "nobody"));

    let e = toml_err("[roles.b]\ndescription = \"no manager\"\n");
    assert!(matches!(e, NoManager { ref role, line: Some(5) } if role == "b"));

    let e = toml_err("[roles.p]\nreports_to = \"a\"\n");
    assert!(matches!(e, PrincipalReports { ref role, line: Some(5) } if role == "p"));

    let e = toml_err("[roles.\"a.b\"]\nreports_to = \"a\"\n");
    assert!(matches!(e, InvalidName { ref source, line: Some(5) } if source.name == "a.b"));

    let e = toml_err("[roles.b]\nreports_to = \"*\"\n");
    assert!(matches!(e, InvalidName { ref source, line: Some(6) } if source.name == "*"));

    let e = toml_err("[roles.b]\nreports_to = \"a\"\ntools = [\n  \"time.*\",\n  \"git\",\n]\n");
    assert!(matches!(e, InvalidToolGrant { ref role, line: Some(9), .. } if role == "b"));

    let e = toml_err("[roles.b]\nreports_to = \"a\"\nalternate = \"p\"\n");
    assert!(matches!(e, InvalidAlternate { ref role, line: Some(7), .. } if role == "b"));

    let e = toml_err("[roles.b]\nreports_to = \"a\"\nalternate = \"b\"\n");
    assert!(matches!(e, SelfChannel { ref role, line: Some(7) } if role == "b"));

    let e = toml_err("[roles.b]\nreports_to = \"a\"\nalternate = \"zz\"\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(7), .. } if role == "zz"));

    let peers = "[roles.b]\nreports_to = \"a\"\n[[peers]]\nbetween = [\"a\", \"b\"]\n";
    assert!(OrgChart::from_toml_str(&format!("{HEADER}{peers}")).is_ok());
    let e = toml_err(&format!(
        "{peers}[[peers]]\npurpose = \"again\"\nbetween = [\"b\", \"a\"]\n"
    ));
    assert!(matches!(
        e,
        Duplicate {
            what: "peer channel",
            line: Some(11),
            ..
        }
    ));
    let e = toml_err("[[peers]]\nbetween = [\"a\", \"a\"]\n");
    assert!(matches!(e, SelfChannel { ref role, line: Some(6) } if role == "a"));
    let e = toml_err("[[peers]]\nbetween = [\"a\",\n  \"zz\"]\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(7), .. } if role == "zz"));
    let e = toml_err("[[peers]]\nbetween = [\"a\"]\n");
    assert!(matches!(e, Toml { line: Some(6), .. }));

    let short = "[roles.b]\nreports_to = \"a\"\n[[shortcuts]]\nfrom = \"p\"\nto = \"b\"\ntask_types = [\"t\"]\n";
    assert!(OrgChart::from_toml_str(&format!("{HEADER}{short}")).is_ok());
    let e = toml_err(&format!(
        "{short}[[shortcuts]]\nfrom = \"p\"\nto = \"b\"\ntask_types = [\"u\"]\n"
    ));
    assert!(matches!(
        e,
        Duplicate {
            what: "shortcut",
            line: Some(12),
            ..
        }
    ));
    let e = toml_err("[[shortcuts]]\nfrom = \"a\"\nto = \"zz\"\ntask_types = [\"t\"]\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(7), .. } if role == "zz"));
    let e = toml_err("[[shortcuts]]\nfrom = \"zz\"\nto = \"a\"\ntask_types = [\"t\"]\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(6), .. } if role == "zz"));
    let e = toml_err("[[shortcuts]]\nfrom = \"a\"\nto = \"a\"\ntask_types = [\"t\"]\n");
    assert!(matches!(e, SelfChannel { ref role, line: Some(7) } if role == "a"));
    let e = toml_err("[[shortcuts]]\nfrom = \"a\"\nto = \"p\"\ntask_types = [\"t\"]\n");
    assert!(matches!(e, DelegatesToPrincipal { ref role, line: Some(7) } if role == "a"));
    let e =
        toml_err("[[shortcuts]]\nfrom = \"p\"\nto = \"a\"\ntask_types = [\"ok\", \"Bad Type\"]\n");
    assert!(matches!(e, InvalidName { ref source, line: Some(8) } if source.name == "Bad Type"));

    let e = OrgChart::from_toml_str("org = \"o\"\n[roles.a]\nreports_to = \"p\"\n").unwrap_err();
    assert!(matches!(e, MissingPrincipal));
    let e = OrgChart::from_toml_str("org = \"o.o\"\nprincipal = \"p\"\n").unwrap_err();
    assert!(matches!(e, InvalidName { line: Some(1), .. }));
    let e = OrgChart::from_toml_str("org = \"o\"\n\nprincipal = \">\"\n").unwrap_err();
    assert!(matches!(e, InvalidName { line: Some(3), .. }));
}

#[test]
fn roles_are_checked_in_file_order() {
    // `zed` comes first in the file, so its error wins over `abc`'s.
    let e = toml_err("[roles.zed]\n[roles.abc]\n");
    assert!(matches!(e, ChartError::NoManager { ref role, line: Some(5) } if role == "zed"));
}

#[test]
fn malformed_toml_is_refused_with_a_line() {
    use ChartError::*;
    // Unknown fields, at every level.
    assert!(matches!(
        toml_err("[roles.b]\nreports_to = \"a\"\nmanager = \"a\"\n"),
        Toml { line: Some(7), .. }
    ));
    assert!(matches!(
        toml_err("colour = \"blue\"\n"),
        Toml { line: Some(5), .. }
    ));
    assert!(matches!(
        toml_err("[[peers]]\nbetween = [\"a\", \"b\"]\nkind = 1\n"),
        Toml { line: Some(7), .. }
    ));
    // Syntax and types.
    assert!(matches!(toml_err("[roles.b\n"), Toml { line: Some(5), .. }));
    assert!(matches!(
        toml_err("[roles.b]\nreports_to = 3\n"),
        Toml { line: Some(6), .. }
    ));
    // A role declared twice is a TOML error (duplicate table).
    assert!(matches!(
        toml_err("[roles.a]\nreports_to = \"p\"\n"),
        Toml { line: Some(5), .. }
    ));
    assert!(matches!(
        OrgChart::from_toml_str("principal = \"p\"\n"),
        Err(Toml { .. })
    ));
}

#[test]
fn missing_file_is_an_io_error() {
    let path = Path::new(FIXTURE).with_file_name("no-such-chart.toml");
    let e = OrgChart::from_toml_file(&path).unwrap_err();
    assert!(matches!(e, ChartError::Io { path: ref p, .. } if *p == path));
}

#[test]
fn display_names_role_and_line() {
    let msg = toml_err("[roles.b]\nreports_to = \"nobody\"\n").to_string();
    assert!(
        msg.contains("`nobody`") && msg.contains("`b`") && msg.contains("line 6"),
        "{msg}"
    );
    let msg = code_err(small().role(RoleSpec::new("d"))).to_string();
    assert!(msg.contains("`d`") && !msg.contains("line"), "{msg}");
}

/// A random tree: role `i` reports to the principal (`0`) or to a role
/// declared before it; the roles are added to the builder shuffled.
fn random_tree() -> impl Strategy<Value = Vec<(usize, usize)>> {
    (1usize..40)
        .prop_flat_map(|n| (1..=n).map(|i| (Just(i), 0..i)).collect::<Vec<_>>())
        .prop_shuffle()
}

proptest! {
    #[test]
    fn random_trees_validate_and_chains_reach_the_principal(tree in random_tree()) {
        let name = |i: usize| if i == 0 { "boss".to_owned() } else { format!("r{i}") };
        let chart = tree
            .iter()
            .fold(OrgChart::builder("o").principal("boss"), |b, &(i, m)| {
                b.role(RoleSpec::new(name(i)).reports_to(name(m)))
            })
            .build()
            .unwrap();
        prop_assert_eq!(chart.len(), tree.len());
        for &(i, m) in &tree {
            let chain = chart.chain_of_command(&name(i));
            prop_assert_eq!(chain.first().map(|n| n.to_string()), Some(name(m)));
            prop_assert_eq!(chain.last().map(|n| n.as_str()), Some("boss"));
            let distinct: BTreeSet<_> = chain.iter().collect();
            prop_assert_eq!(distinct.len(), chain.len());
            prop_assert!(chart.reports_of(&name(m)).any(|r| r.as_str() == name(i)));
            prop_assert!(chart.delegation_route(&name(m), &name(i), None).is_ok());
        }
    }
}

#[test]
fn meetings_declared_and_checked() {
    use ChartError::*;
    let chart = small()
        .role(RoleSpec::new("d").reports_to("a").meets(["b", "c", "b"]))
        .build()
        .unwrap();
    assert!(chart.may_meet("d", "b") && chart.may_meet("d", "c"));
    assert!(!chart.may_meet("b", "d") && !chart.may_meet("d", "a"));
    assert_eq!(names(chart.role("d").unwrap().meets()), ["b", "c"]);

    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").meets(["d"])));
    assert!(matches!(e, SelfChannel { ref role, line: None } if role == "d"));
    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").meets(["p"])));
    assert!(matches!(e, MeetsPrincipal { ref role, line: None } if role == "d"));
    let e = code_err(small().role(RoleSpec::new("d").reports_to("a").meets(["zz"])));
    assert!(
        matches!(e, UnknownRole { ref role, ref referenced_by, .. } if role == "zz" && referenced_by == "meets of `d`")
    );

    let chart = OrgChart::from_toml_str(&format!(
        "{HEADER}[roles.b]\nreports_to = \"a\"\n[roles.c]\nreports_to = \"a\"\nmeets = [\"b\"]\n"
    ))
    .unwrap();
    assert!(chart.may_meet("c", "b"));
    let e = toml_err("[roles.b]\nreports_to = \"a\"\nmeets = [\"a\", \"nobody\"]\n");
    assert!(matches!(e, UnknownRole { ref role, line: Some(7), .. } if role == "nobody"));
}
