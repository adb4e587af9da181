"""Sharded (8 simulated CPU devices) forward equals the single-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from deepalign_jax import sharding
from deepalign_jax.models import config_from_hf, create_model, load_pretrained
from tests.models.hf_fixtures import FAMILY_CONFIGS, left_padded_batch, random_hf_model


def test_eight_simulated_devices():
  assert len(jax.devices()) == 8, "tests/conftest.py must set --xla_force_host_platform_device_count=8"


def test_make_mesh_shapes():
  mesh = sharding.make_mesh(data=2, fsdp=-1, tensor=2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match="needs 6 devices, have 8"):
    sharding.make_mesh(data=3, fsdp=2, tensor=1)


def test_logical_to_spec_replicates_indivisible_dims():
  rules = sharding.ShardingRules(sharding.make_mesh(fsdp=4, tensor=2))
  assert sharding.logical_to_spec(("embed", "heads", "head_dim"), (256, 4, 64), rules) == P("fsdp", "tensor", None)
  # 3 key/value heads cannot be split in two: replicated over `tensor` instead.
  assert sharding.logical_to_spec(("embed", "kv_heads", "head_dim"), (256, 3, 64), rules) == P("fsdp", None, None)
  assert sharding.logical_to_spec(("act_batch", "act_seq"), (8, 5), rules) == P("fsdp", None)


@nnx.jit
def _forward(model, ids, mask):
  return model(ids, attention_mask=mask)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
def test_sharded_forward_matches_single_device(family, tmp_path):
  random_hf_model(family).save_pretrained(tmp_path)
  single, _ = load_pretrained(tmp_path)
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sharded, _ = load_pretrained(tmp_path, mesh=mesh)

  # Parameters really are split: heads over `tensor`, d_model over `fsdp`.
  q = sharded.layers.attn.q[...]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 2, q.shape[2] // 2, q.shape[3])
  assert sharded.embed[...].sharding.spec == P("tensor", "fsdp")

  ids, mask, _ = left_padded_batch((24, 20, 17, 13, 24, 9, 11, 24), 24)
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  ids_s = jax.device_put(jnp.asarray(ids), batch_sharding)
  mask_s = jax.device_put(jnp.asarray(mask), batch_sharding)
  expected = np.asarray(_forward(single, jnp.asarray(ids), jnp.asarray(mask)))
  logits = _forward(sharded, ids_s, mask_s)
  assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(logits)[real], expected[real], atol=2e-5, rtol=0)


def test_create_model_sharded_init_matches_unsharded():
  cfg = config_from_hf(FAMILY_CONFIGS["gemma2"]().to_dict())
  mesh = sharding.make_mesh(fsdp=4, tensor=2)
  sharded = create_model(cfg, mesh=mesh, seed=3)
  plain = create_model(cfg, seed=3)
  for (path, a), (_, b) in zip(
    nnx.to_flat_state(nnx.state(sharded, nnx.Param)), nnx.to_flat_state(nnx.state(plain, nnx.Param))
  ):
    assert len(a.get_value().sharding.device_set) == 8, path
    # Same random draws; jit may fuse the scaling differently (1 ulp).
    np.testing.assert_allclose(
      np.asarray(a.get_value()), np.asarray(b.get_value()), rtol=1e-6, atol=0, err_msg=str(path)
    )
