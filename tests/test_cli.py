"""One command-line style: every entry point's --help documents every config key, overrides are checked."""

import pytest

from deepalign_jax.attacks.gcg import GCGConfig
from deepalign_jax.cli import attribute_docs, describe_config, key_docs, parse_command_line
from deepalign_jax.judges.factory import KEY_DOCS


def _clis():
  from deepalign_jax import demo, generate
  from deepalign_jax.analysis import ft_dynamics, kl_depth
  from deepalign_jax.evaluate import rejudge, settings
  from deepalign_jax.models import gguf
  from deepalign_jax.organism import __main__ as organism
  from deepalign_jax.scale import targets
  from deepalign_jax.train import loop

  judge = {f"judge.{k}": doc for k, doc in KEY_DOCS.items()}
  return {
    "train": (loop.default_config, ()),
    "evaluate": (settings.default_config, (attribute_docs(GCGConfig, "gcg."), judge)),
    "kl_depth": (kl_depth.default_config, ()),
    "ft_dynamics": (ft_dynamics.default_config, ()),
    "generate": (generate.get_config, ()),
    "judge": (rejudge.get_config, (judge,)),
    "demo": (demo.get_config, ()),
    "gguf": (gguf.get_config, ()),
    "organism": (organism.get_config, ()),
    "scale.plan": (targets.example_plan, (targets.plan, targets.PLAN_KEY_DOCS)),
  }


@pytest.mark.parametrize("cli", sorted(_clis()))
def test_help_gives_every_key_a_default_and_a_doc(cli):
  defaults, docs = _clis()[cli]
  lines = describe_config(defaults(), defaults, *docs).splitlines()
  assert lines and all(line.startswith("  --config.") and "    # " in line for line in lines), [
    line for line in lines if "    # " not in line
  ]


def test_key_docs_reads_comments_beside_and_above_keys():
  def builder():
    import ml_collections

    c = ml_collections.ConfigDict()
    c.alpha = 1  # the first
    # the second, on
    # two lines
    c.beta = 2
    c.group = ml_collections.ConfigDict(
      dict(
        one=1,  # inside
        # above
        two=2,
      )
    )
    c.after = 3  # outside again
    return c

  assert key_docs(builder) == {
    "alpha": "the first",
    "beta": "the second, on two lines",
    "group.one": "inside",
    "group.two": "above",
    "after": "outside again",
  }


def test_built_in_defaults_and_overrides_parse_like_the_cli():
  from deepalign_jax import generate

  config, workdir = parse_command_line(
    ["--config.top_k=5"], defaults=generate.get_config, config_required=False, workdir=False
  )
  assert workdir is None and config.top_k == 5 and config.top_p == generate.get_config().top_p
  with pytest.raises(ValueError, match="--config.top_kk: no such key; did you mean config.top_k"):
    parse_command_line(["--config.top_kk=5"], defaults=generate.get_config, config_required=False, workdir=False)
