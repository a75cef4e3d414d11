"""The study protocol: criteria read from config with errors that name the field, seeds for
tuning disjoint from those reported on, log grids extended once at an edge and flagged, and
checks evaluated with Holm across the secondary ones."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from pipelines.harness.errors import ConfigError
from pipelines.studies.engine import checks, protocol, tuning
from pipelines.studies.engine.session import Session

GLOBALS = OmegaConf.create({"alpha": 0.05, "level": 0.95, "resamples": 199,
                            "seed_start": {"report": 0, "tuning": 100}})


def params(**over):
    base = {"claim": "A beats B.", "seeds": {"report": 4, "tuning": 2},
            "arms": {"a": {"optim": {"name": "sgd"}, "tune": {"lr": {"low": 0.01, "high": 1.0,
                                                                    "num": 3}}},
                     "b": {"optim": {"name": "adam"}}},
            "tuning": {"metric": "loss", "goal": "min", "extend": 2},
            "checks": {"primary": {"id": "p", "statement": "a lower", "test": "less",
                                   "metric": "loss", "a": {"arm": "a"}, "b": {"arm": "b"}},
                       "secondary": [{"id": "s", "statement": "a below 1", "test": "below",
                                      "metric": "loss", "a": {"arm": "a"}, "threshold": 1.0}]}}
    base.update(over)
    return OmegaConf.create(base)


def test_protocol_reads_claim_checks_and_disjoint_seeds():
    proto = protocol.load(params(), GLOBALS)
    assert proto.primary.id == "p" and [c.id for c in proto.secondary] == ["s"]
    assert proto.seeds == {"report": [0, 1, 2, 3], "tuning": [100, 101]}
    assert "paired by seed" in proto.primary.describe()


@pytest.mark.parametrize("change,field", [
    ({"claim": ""}, "study.claim"),
    ({"checks": {"secondary": []}}, "study.checks.primary"),
    ({"checks": {"primary": {"id": "p", "statement": "x", "test": "bigger", "metric": "m",
                             "a": {}}}}, "study.checks.primary.test"),
    ({"checks": {"primary": {"id": "p", "statement": "x", "test": "less", "metric": "m",
                             "a": {"arm": "a"}}}}, "study.checks.primary.b"),
    ({"checks": {"primary": {"id": "p", "statement": "x", "test": "equivalent", "metric": "m",
                             "a": {"arm": "a"}, "b": {"arm": "b"}}}},
     "study.checks.primary.margin"),
    ({"checks": {"primary": {"id": "p", "statement": "x", "test": "below", "metric": "m",
                             "a": {}, "threshold": 1, "tolerance": 2}}},
     "study.checks.primary.tolerance"),
    ({"seeds": {"report": 0, "tuning": 2}}, "study.seeds.report"),
    ({"tuning": {"metric": "loss", "goal": "best"}}, "study.tuning.goal"),
])
def test_bad_protocol_names_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        protocol.load(params(**change), GLOBALS)
    assert err.value.key == field


def test_overlapping_seed_sets_are_refused():
    g = OmegaConf.create({**OmegaConf.to_container(GLOBALS),
                          "seed_start": {"report": 0, "tuning": 3}})
    with pytest.raises(ConfigError, match="disjoint"):
        protocol.load(params(), g)


def test_log_grid_and_one_minus_log_grid():
    ax = tuning.axis("lr", {"low": 1e-3, "high": 1e-1, "num": 3}, "k")
    assert ax.values == pytest.approx([1e-3, 1e-2, 1e-1])
    beta = tuning.axis("momentum", {"low": 0.9, "high": 0.999, "num": 3,
                                    "scale": "one_minus_log"}, "k")
    assert beta.values == pytest.approx([0.9, 0.99, 0.999])
    assert beta.extended("high", 1) == pytest.approx([0.9999])
    assert beta.extended("low", 2) == [0.0]  # 1 - beta = 1 (beta 0); 10 is outside [0, 1)
    with pytest.raises(ConfigError, match="k"):
        tuning.axis("lr", {"low": 1.0, "high": 0.1, "num": 3}, "k")


def quadratic_score(best_log_lr):
    def score(settings):
        return [(math.log10(s["lr"]) - best_log_lr) ** 2 for s in settings]
    return score


def test_a_pick_inside_the_grid_is_not_extended():
    axes = [tuning.axis("lr", {"low": 1e-3, "high": 1.0, "num": 4}, "k")]
    pick = tuning.tune("a", axes, quadratic_score(-1.9), "min", extend=2)
    assert pick.chosen == {"lr": pytest.approx(1e-2)}
    assert pick.extended == [] and pick.at_edge == []


def test_an_edge_pick_extends_once_and_is_flagged_if_still_at_the_edge():
    axes = [tuning.axis("lr", {"low": 1e-3, "high": 1e-1, "num": 3}, "k")]
    pick = tuning.tune("a", axes, quadratic_score(0.0), "min", extend=1)  # best lr = 1
    assert pick.extended == ["lr"]
    assert pick.chosen["lr"] == pytest.approx(1.0)  # one point past 0.1
    assert pick.at_edge == ["lr"]
    axes = [tuning.axis("lr", {"low": 1e-3, "high": 1e-1, "num": 3}, "k")]
    pick = tuning.tune("a", axes, quadratic_score(0.0), "min", extend=2)
    assert pick.chosen["lr"] == pytest.approx(1.0) and pick.at_edge == []
    assert len(pick.trials) == 5


def test_tuning_on_two_axes_scores_the_product():
    axes = [tuning.axis("lr", [0.1, 0.2], "k"), tuning.axis("wd", [0.0, 1.0], "k")]
    seen = []

    def score(settings):
        seen.extend(settings)
        return [s["lr"] + s["wd"] for s in settings]
    pick = tuning.tune("a", axes, score, "max", extend=2)
    assert len(seen) == 4 and pick.chosen == {"lr": 0.2, "wd": 1.0}
    assert pick.extended == []  # a fixed list is never extended ...
    assert pick.at_edge == ["lr", "wd"]  # ... but a pick at its end is flagged


def test_a_fixed_list_flags_its_ends_but_not_a_zero_bound_or_words():
    def pick(values, best):
        return tuning.tune("a", [tuning.axis("x", values, "k")],
                           lambda ss: [abs(s["x"] - best) for s in ss], "min", extend=2)
    assert pick([1e-4, 5e-4], 1.0).at_edge == ["x"]  # the best weight decay may lie beyond
    assert pick([1e-4, 5e-4, 1e-3], 5e-4).at_edge == []
    assert pick([0.0, 1e-4, 5e-4], -1.0).at_edge == []  # no decay: nothing below to try
    assert pick([0.5, 0.9, 0.99], 0.0).at_edge == ["x"]
    words = tuning.tune("a", [tuning.axis("x", ["cos", "step"], "k")],
                        lambda ss: [0.0 if s["x"] == "step" else 1.0 for s in ss], "min", 2)
    assert words.at_edge == []


def test_a_diverged_tuning_run_makes_the_setting_the_worst():
    assert tuning.aggregate([1.0, math.inf], "min") == math.inf
    assert tuning.aggregate([1.0, math.nan], "max") == -math.inf
    assert tuning.aggregate([1.0, 3.0], "min") == 2.0


def test_session_tunes_each_arm_on_the_tuning_seeds_only(tmp_path):
    p = params()
    s = Session(p, protocol.load(p, GLOBALS), tmp_path)
    used = []

    def evaluate(settings, seeds):
        used.append(list(seeds))
        return [[{"seed": q, "loss": (math.log10(st["lr"]) + 1) ** 2} for q in seeds]
                for st in settings]
    hp = s.tune("a", evaluate)
    assert hp == {"name": "sgd", "lr": pytest.approx(0.1)}
    assert s.tune("b", evaluate) == {"name": "adam"}  # not tuned: its fixed values
    assert all(seeds == s.tuning_seeds for seeds in used)
    assert not set(s.tuning_seeds) & set(s.report_seeds)
    assert [pk.arm for pk in s.picks] == ["a", "b"] and s.picks[0].at_edge == []
    assert {r["seed"] for r in s.tuning_rows} == set(s.tuning_seeds)


def test_checks_holm_adjusts_secondary_and_decides_by_direction():
    p = params(checks={
        "primary": {"id": "p", "statement": "a lower", "test": "less", "metric": "loss",
                    "a": {"arm": "a"}, "b": {"arm": "b"}},
        "secondary": [
            {"id": "s1", "statement": "a below 5", "test": "below", "metric": "loss",
             "a": {"arm": "a"}, "threshold": 5.0},
            {"id": "s2", "statement": "b below 0", "test": "below", "metric": "loss",
             "a": {"arm": "b"}, "threshold": 0.0},
            {"id": "s3", "statement": "every a <= 2", "test": "all_below", "metric": "loss",
             "a": {"arm": "a"}, "threshold": 2.0}]})
    proto = protocol.load(p, GLOBALS)
    rows = [{"arm": "a", "seed": s, "loss": 1.0 + 0.1 * s} for s in range(6)]
    rows += [{"arm": "b", "seed": s, "loss": 3.0 + 0.13 * s * s} for s in range(6)]
    out = checks.evaluate(proto, rows)
    assert [r.outcome for r in out] == ["supported", "supported", "contradicted", "supported"]
    primary, s1, s2, s3 = out
    assert primary.p_adjusted == primary.test.p  # the primary check is not adjusted
    from pipelines.studies.engine.stats import holm
    assert [s1.p_adjusted, s2.p_adjusted] == pytest.approx(holm([s1.test.p, s2.test.p]))
    assert s3.test is None and "6 of 6" in s3.evidence


def test_a_check_selecting_no_rows_is_inconclusive_not_silent():
    proto = protocol.load(params(), GLOBALS)
    out = checks.evaluate(proto, [{"arm": "c", "seed": 0, "loss": 1.0}])
    assert out[0].outcome == "inconclusive" and "no data" in out[0].evidence


def test_a_paired_check_refuses_rows_without_a_partner():
    proto = protocol.load(params(), GLOBALS)
    rows = [{"arm": "a", "seed": 0, "loss": 1.0}, {"arm": "a", "seed": 1, "loss": 1.0},
            {"arm": "b", "seed": 0, "loss": 2.0}]
    with pytest.raises(ValueError, match="no partner"):
        checks.evaluate(proto, rows)
