//! Property: changing one stage's parameter marks exactly that stage and its descendants to run,
//! over random DAGs; running then computes exactly those nodes.

mod common;

use std::collections::BTreeSet;

use common::Env;
use mpfnet::plan::{self, Status};
use proptest::prelude::*;

fn pipeline_text(parents: &[Vec<usize>]) -> String {
    let mut t = String::from("seed = 1\n");
    for (i, ps) in parents.iter().enumerate() {
        t.push_str(&format!(
            "[stages.s{i}]\nkind = \"num\"\nvalue = {}.0\n",
            i + 1
        ));
        if !ps.is_empty() {
            let list: Vec<String> = ps.iter().map(|p| format!("\"s{p}\"")).collect();
            t.push_str(&format!("inputs = {{ ins = [{}] }}\n", list.join(", ")));
        }
    }
    t
}

fn descendants(parents: &[Vec<usize>], s: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::from([s]);
    for (i, ps) in parents.iter().enumerate() {
        // parents only point backwards, so one forward pass closes the set
        if ps.iter().any(|p| out.contains(p)) {
            out.insert(i);
        }
    }
    out
}

fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, usize)> {
    (2usize..9).prop_flat_map(|n| {
        let parents = (0..n)
            .map(|i| {
                proptest::collection::btree_set(0..i.max(1), 0..=i.min(3))
                    .prop_map(move |s| s.into_iter().filter(|&p| p < i).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>();
        (parents, 0..n)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn changing_a_parameter_marks_exactly_the_descendants((parents, changed) in dag()) {
        let env = Env::new();
        let p = env.write("dag.toml", &pipeline_text(&parents));
        env.run(&p, &[]).unwrap();
        let set = format!("stages.s{changed}.value=100.0");
        let mut e = env.engine(&p, &[set.as_str()]).unwrap();
        e.prepare().unwrap();
        let plan = plan::plan(&e, None).unwrap();
        let expect = descendants(&parents, changed);
        for entry in &plan.entries {
            let i: usize = entry.node[1..].parse().unwrap();
            let runs = matches!(entry.status, Status::Run | Status::RunIfInputsChange);
            prop_assert_eq!(runs, expect.contains(&i), "node {} status {:?}", entry.node, entry.status);
        }
        let out = env.run(&p, &[set.as_str()]).unwrap();
        prop_assert_eq!(out.summary.computed, expect.len());
    }
}
