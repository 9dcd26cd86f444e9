"""experiments.methods: the registry of methods, their config blocks and the notes on them."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import lpjax
from experiments import methods
from experiments.config import base as common
from experiments.config import command_line as configuration
from experiments.config import names
from experiments.config import rules as validation
from experiments.run import workdir as workdir_lib

COUNTS = np.array([138, 105, 78, 57, 42, 31, 23, 17, 12, 9])


def _only_declared_blocks(config, name):
    """``config`` with the method's own blocks and nothing else of the method blocks."""
    kept = {key: config[key] for key in config if key not in methods.BLOCK_NAMES}
    kept |= {block: config[block] for block in methods.entry(name).blocks}
    return ml_collections.ConfigDict(kept)


@pytest.mark.parametrize("name", methods.NAMES)
def test_every_method_builds_from_its_declared_blocks_alone(name):
    config = configuration.apply_overrides(configuration.load_config(), {"method.name": name})
    entry = methods.entry(name)
    assert set(entry.blocks) <= set(methods.BLOCK_NAMES) and entry.summary
    full = methods.make_method(config, COUNTS, steps_per_epoch=8, feature_dim=16)
    alone = methods.make_method(
        _only_declared_blocks(config, name), COUNTS, steps_per_epoch=8, feature_dim=16
    )
    labels = (
        jnp.asarray(np.eye(10, dtype=np.int32)[[0, 3, 9]])
        if entry.multilabel
        else jnp.asarray([0, 3, 9])
    )
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 10)), jnp.float32)
    extras = {"features": jnp.ones((3, 16)), "classifier": {"kernel": jnp.ones((16, 10))}}
    losses = []
    for built in (full, alone):
        perturbed, _ = built.transform.apply(logits, labels, built.transform.init(), **extras)
        losses.append(np.asarray(built.loss_fn(perturbed, labels)))
    np.testing.assert_array_equal(losses[0], losses[1])
    assert losses[0].shape == (3,) and np.isfinite(losses[0]).all()


def test_a_builder_sees_only_its_blocks(monkeypatch):
    from experiments.methods import registry

    config = configuration.apply_overrides(configuration.load_config(), {"method.name": "la"})
    seen = []

    def spy(blocks, inputs):
        seen.append(sorted(blocks))
        return methods.Method(lpjax.identity(), lpjax.softmax_cross_entropy_with_integer_labels)

    monkeypatch.setitem(registry._REGISTRY, "la", methods.entry("la")._replace(build=spy))
    methods.make_method(config, COUNTS, steps_per_epoch=8)
    assert seen == [["la"]]


def test_registry_names_kinds_and_model_options():
    assert "lpl_mean" in methods.NAMES and "lpl_balanced" not in methods.NAMES
    multilabel = {name for name in methods.NAMES if methods.is_multilabel(name)}
    assert multilabel == {"bce", "focal", "asl", "lpl_multilabel"}
    config = configuration.load_config()
    for name in methods.NAMES:
        override = configuration.apply_overrides(config, {"method.name": name})
        expected = {"cosine_scale": 30.0} if name.startswith("ldam") else {}
        assert methods.model_options(override) == expected, name
    # An older name still works; an unknown one is refused by the config, naming the valid ones.
    assert methods.entry("lpl_balanced") is methods.entry("lpl_mean")
    unknown = configuration.apply_overrides(config, {"method.name": "lpl_balancedd"})
    with pytest.raises(ValueError, match="method.name must be one of ce, la, .*lpl_balanced"):
        names.check_names(unknown)


def test_lpl_mean_is_the_mean_rule_whatever_split_rule_says():
    config = configuration.load_config()
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(16, 10)), jnp.float32)
    labels = jnp.asarray(np.arange(16) % 10)
    outputs = {}
    for name, rule in (("lpl_mean", "longtail"), ("lpl_mean", "mean"), ("lpl_varied", "mean")):
        built = methods.make_method(
            configuration.apply_overrides(config, {"method.name": name, "lpl.split_rule": rule}),
            COUNTS,
            steps_per_epoch=8,
        )
        outputs[name, rule] = built.transform.apply(logits, labels, built.transform.init())[0]
    np.testing.assert_array_equal(outputs["lpl_mean", "longtail"], outputs["lpl_mean", "mean"])
    np.testing.assert_array_equal(outputs["lpl_mean", "mean"], outputs["lpl_varied", "mean"])
    # lpl_varied with the mean rule is lpl_mean's run, built by it; the config says so.
    varied_mean = configuration.apply_overrides(
        config, {"method.name": "lpl_varied", "lpl.split_rule": "mean"}
    )
    notes = validation.validate_config(varied_mean)
    assert any("is the run of lpl_mean" in note for note in notes)


def test_a_bad_split_rule_is_refused_naming_the_valid_ones():
    config = configuration.apply_overrides(
        configuration.load_config(), {"lpl.split_rule": "balanced"}
    )
    # Checked once, by the config (experiments.config.names), before any method is built.
    with pytest.raises(
        workdir_lib.UserError, match="split_rule must be one of longtail, mean; got 'balanced'"
    ):
        validation.validate_config(config)
    # A method that does not read config.lpl does not care.
    ce = configuration.apply_overrides(config, {"method.name": "ce"})
    methods.make_method(ce, COUNTS, steps_per_epoch=8)


def test_blocks_a_method_does_not_read_give_notes_when_changed():
    reference = configuration.load_config()  # the default config: la_lpl
    changed = configuration.apply_overrides(
        reference, {"method.name": "ce", "la.tau": "1.5", "isda.lambda_0": "0.25"}
    )
    notes = validation.validate_config(changed, reference=reference)
    assert notes == [
        "config.la.tau = 1.5 is ignored: method ce does not read config.la.",
        "config.isda.lambda_0 = 0.25 is ignored: method ce does not read config.isda.",
    ]
    # The config file's own settings of other methods' blocks (ldam.drw_start_epoch = 48)
    # are no note, nor are the blocks the method reads.
    assert validation.validate_config(reference, reference=reference) == []
    tuned = configuration.apply_overrides(reference, {"la.tau": "1.5", "lpl.epsilon": "0.3"})
    assert validation.validate_config(tuned, reference=reference) == []
    # Without a reference, no notes on method blocks.
    assert validation.validate_config(changed) == []


def test_schedule_and_optimizer_fields_give_notes_when_ignored():
    config = configuration.apply_overrides(
        configuration.load_config(),
        {"optim.milestones": "(3, 5)", "optim.name": "adamw", "optim.momentum": "0.5"},
    )
    assert validation.validate_config(config) == [
        "config.optim.milestones = (3, 5) is ignored by the cosine schedule.",
        "config.optim.momentum = 0.5 is ignored by the adamw optimizer.",
    ]


def test_method_blocks_of_the_base_config_are_the_registry_defaults():
    base = common.get_base_config()
    for name, block in methods.default_blocks().items():
        assert base[name].to_dict() == block.to_dict()
    assert base.lpl.split_rule in methods.SIGNS_AND_BOUNDS_RULES == methods.SPLIT_RULES


def test_the_authors_lpl_methods_take_the_scripts_steps_from_the_lpl_block():
    config = configuration.apply_overrides(
        configuration.load_config(),
        {
            "method.name": "la_lpl_authors",
            "lpl.epsilon": "0.5",
            "lpl.delta_epsilon": "1.0",
            "lpl.step_size": "0.15",  # tail budget 1.5: the rarest class takes 10 steps
            "lpl.head_scale": "0.6",
            "lpl.num_head_classes": "4",
        },
    )
    built = methods.make_method(config, COUNTS, steps_per_epoch=8)
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(20, 10)), jnp.float32)
    labels = jnp.asarray(np.arange(20) % 10)
    got, _ = built.transform.apply(logits, labels, built.transform.init())
    adjusted = logits + jnp.log(COUNTS / COUNTS.sum())  # LA, tau = 1
    signs, steps = lpjax.authors_step_counts(
        COUNTS, num_head_classes=4, num_steps=10, head_scale=0.6
    )
    expected = lpjax.authors_lpl_perturbation(adjusted, labels, signs, steps, step_size=0.15)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert built.reference_transform is not None  # logs delta against LA's logits
    too_small = configuration.apply_overrides(
        config, {"method.name": "lpl_authors", "lpl.step_size": "2.0"}
    )
    with pytest.raises(ValueError, match="lpl_authors needs"):
        methods.make_method(too_small, COUNTS, steps_per_epoch=8)


def test_ldam_drw_lpl_runs_lpl_on_ldams_logits_with_budgets_scaled_by_s():
    overrides = {"lpl.epsilon": "0.1", "lpl.delta_epsilon": "0.2", "lpl.step_size": "0.01"}
    config = configuration.apply_overrides(
        configuration.load_config(), {"method.name": "ldam_drw_lpl", **overrides}
    )
    built = methods.make_method(config, COUNTS, steps_per_epoch=8)
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(20, 10)), jnp.float32)
    labels = jnp.asarray(np.arange(20) % 10)
    got, _ = built.transform.apply(logits, labels, built.transform.init())
    s = config.ldam.scale
    margins = lpjax.ldam_transform(COUNTS, max_margin=config.ldam.max_margin * s, scale=1.0)
    lpl = lpjax.lpl_longtail_transform(
        COUNTS,
        num_head_classes=config.lpl.num_head_classes,
        epsilon=0.1 * s,
        delta_epsilon=0.2 * s,
        step_size=0.01 * s,
        head_scale=config.lpl.head_scale,
    )
    chained = lpjax.chain(margins, lpl)
    expected, _ = chained.apply(logits, labels, chained.init())
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # LDAM-DRW's deferred re-weighting: uniform before its epoch, class-balanced after.
    drw_step = config.ldam.drw_start_epoch * 8
    np.testing.assert_array_equal(built.example_weights_fn(labels, jnp.asarray(0)), 1.0)
    assert not np.allclose(built.example_weights_fn(labels, jnp.asarray(drw_step)), 1.0)


def test_deferred_starts_of_la_lpl_lpl_varied_and_the_la_control():
    config = configuration.load_config()
    for name, field, before_is_la in (
        ("la_lpl", "lpl.start_epoch", True),
        ("lpl_varied", "lpl.start_epoch", False),
        ("la", "la.start_epoch", False),
    ):
        built = methods.make_method(
            configuration.apply_overrides(config, {"method.name": name, field: "3"}),
            COUNTS,
            steps_per_epoch=8,
        )
        before, start = built.deferred
        assert start == 24, name
        logits = jnp.zeros((2, 10))
        early, _ = before.apply(logits, jnp.asarray([0, 9]), before.init())
        expected = np.log(COUNTS / COUNTS.sum()) if before_is_la else 0.0
        np.testing.assert_allclose(early, np.broadcast_to(expected, (2, 10)), rtol=1e-6)
    plain = methods.make_method(config, COUNTS, steps_per_epoch=8)  # the default: la_lpl
    assert plain.deferred is None
