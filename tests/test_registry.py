"""The conventions registry: Convention, get_convention, conventions, and its docs.

What each entry claims about its framework is checked against the framework
in ``test_against_<framework>.py``; here: the registry's own behaviour, the
ops' use of a convention, and that the committed docs are what the registry
generates.
"""

import dataclasses
import pathlib
import re

import numpy as np
import pytest
from jax import lax

import flipconv as fc
from flipconv import _conventions_doc, registry
from flipconv._layouts import generalize

ROOT = pathlib.Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(6)
CONTRACT_FIELDS = [
  "name",
  "layout",
  "kernel_layout",
  "flip",
  "transpose_kernel_layout",
  "transpose_flip",
  "linear_layout",
  "transpose_output_size",
]


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def test_convention_is_a_frozen_dataclass_with_the_contract_fields():
  names = [f.name for f in dataclasses.fields(fc.Convention)]
  assert names[: len(CONTRACT_FIELDS)] == CONTRACT_FIELDS
  c = fc.get_convention("pytorch")
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.flip = True
  assert hash(c) == hash(dataclasses.replace(c))


def test_registry_holds_the_contract_names_and_aliases_are_the_same_object():
  for name in [
    "flax",
    "jax",
    "haiku",
    "tensorflow",
    "keras",
    "pytorch",
    "onnx",
    "caffe",
    "theano",
    "lasagne",
    "lasagne-mm",
    "tflite",
    "equinox",
  ]:
    assert name in fc.conventions
  assert fc.get_convention("jax") is fc.get_convention("flax")
  assert fc.get_convention("keras") is fc.get_convention("tensorflow")
  assert fc.get_convention("tf") is fc.get_convention("tensorflow")
  assert fc.get_convention("torch") is fc.get_convention("pytorch")
  for key, c in fc.conventions.items():
    assert fc.get_convention(key) is c
    assert fc.conventions[c.name] is c  # an alias points at a canonical entry
  # Haiku's transposed kernel differs from Flax's: not an alias (test_against_haiku).
  assert fc.get_convention("haiku") is not fc.get_convention("flax")


def test_conventions_mapping_is_read_only():
  with pytest.raises(TypeError):
    fc.conventions["mine"] = fc.get_convention("flax")
  with pytest.raises(TypeError):
    del fc.conventions["flax"]


@pytest.mark.parametrize(
  ("name", "canonical"),
  [("PyTorch", "pytorch"), ("lasagne_mm", "lasagne-mm"), ("KERAS", "tensorflow")],
)
def test_names_are_case_and_separator_insensitive(name, canonical):
  assert fc.get_convention(name).name == canonical


def test_unknown_name_lists_the_known_ones_and_the_closest():
  with pytest.raises(ValueError, match="did you mean 'pytorch'") as e:
    fc.get_convention("pytroch")
  message = str(e.value)
  assert "unknown convention 'pytroch'" in message
  for name in fc.conventions:
    assert name in message
  with pytest.raises(TypeError, match=r"name or a flipconv\.Convention"):
    fc.get_convention(3)


def test_a_convention_passes_through_get_convention():
  c = dataclasses.replace(fc.get_convention("pytorch"), name="mine")
  assert fc.get_convention(c) is c


@pytest.mark.parametrize(
  ("field", "value", "error", "match"),
  [
    ("layout", "NCHO", ValueError, "belongs to kernel layouts"),
    ("layout", "NHW", ValueError, "lacks C"),
    ("kernel_layout", "OHW", ValueError, "lacks I"),
    ("kernel_layout", "OIHH", ValueError, "repeats"),
    ("transpose_kernel_layout", 4, TypeError, "layout string"),
    ("flip", 1, TypeError, "flip must be True or False"),
    ("linear_layout", "IOO", ValueError, "linear_layout must be 'OI' or 'IO'"),
    ("transpose_output_size", "keras", ValueError, "'pytorch' or 'tensorflow'"),
    ("depthwise_kernel_layout", "HWCX", ValueError, "must hold O and I"),
    ("depthwise_kernel_layout", "hwcm", TypeError, "upper-case"),
    ("name", "", TypeError, "non-empty string"),
  ],
)
def test_bad_convention_fields_are_refused_with_the_field_named(field, value, error, match):
  with pytest.raises(error, match=match):
    dataclasses.replace(fc.get_convention("pytorch"), **{field: value})


# ---------------------------------------------------------------------------
# The ops and a convention


def test_ops_take_the_conventions_flip_and_layouts():
  x = ints((2, 3, 6, 5))  # NCHW
  k = ints((4, 3, 3, 2))  # OIHW
  want = lax.conv_general_dilated(
    x, k[:, :, ::-1, ::-1], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  np.testing.assert_array_equal(np.asarray(fc.conv(x, k, convention="lasagne")), np.asarray(want))
  # The transposed conv: the adjoint of the convention's forward conv.
  y = ints((2, 4, 4, 4))
  want_t = lax.conv_transpose(
    y,
    k[:, :, ::-1, ::-1],
    (1, 1),
    "VALID",
    dimension_numbers=("NCHW", "OIHW", "NCHW"),
    transpose_kernel=True,
  )
  got_t = fc.conv_transpose(y, k, convention="lasagne")
  np.testing.assert_array_equal(np.asarray(got_t), np.asarray(want_t))


def test_explicit_arguments_win_over_the_convention():
  x = ints((2, 3, 6, 5))  # NCHW
  k = ints((4, 3, 3, 2))  # OIHW
  # flip: lasagne flips, flip=False does not.
  np.testing.assert_array_equal(
    np.asarray(fc.conv(x, k, convention="lasagne", flip=False)),
    np.asarray(fc.conv(x, k, flip=False, layout="NCHW", kernel_layout="OIHW")),
  )
  # layout and kernel_layout: pytorch's flip with Flax's layouts.
  x_nhwc, k_hwio = x.transpose(0, 2, 3, 1), k.transpose(2, 3, 1, 0)
  got = fc.conv(x_nhwc, k_hwio, convention="pytorch", layout="NHWC", kernel_layout="HWIO")
  np.testing.assert_array_equal(
    np.asarray(got).transpose(0, 3, 1, 2), np.asarray(fc.conv(x, k, convention="pytorch"))
  )
  # conv_transpose: explicit flip and kernel_layout win over transpose_flip/..._layout.
  y = ints((2, 4, 4, 4))
  np.testing.assert_array_equal(
    np.asarray(
      fc.conv_transpose(y, k, convention="flax", flip=False, layout="NCHW", kernel_layout="OIHW")
    ),
    np.asarray(fc.conv_transpose(y, k, convention="pytorch")),
  )


@pytest.mark.parametrize("rank", [1, 3])
def test_2d_layouts_generalise_to_other_ranks(rank):
  assert generalize("NCHW", 1) == "NCW" and generalize("NCHW", 3) == "NCDHW"
  assert generalize("HWIO", 1) == "WIO" and generalize("HWIO", 3) == "DHWIO"
  spatial = (5, 6, 4)[3 - rank :]
  ksize = (2, 3, 2)[3 - rank :]
  x = ints((2, *spatial, 3))  # flax: N...C
  k = ints((*ksize, 3, 4))  # ...IO
  dn = (generalize("NHWC", rank), generalize("HWIO", rank), generalize("NHWC", rank))
  want = lax.conv_general_dilated(x, k, (1,) * rank, "SAME", dimension_numbers=dn)
  np.testing.assert_array_equal(
    np.asarray(fc.conv(x, k, convention="flax", padding="SAME")), np.asarray(want)
  )
  # The same conv through the unbatched Equinox layout and its OIHW kernel.
  k_eqx = fc.convert_kernel(k, "flax", "equinox")
  x_eqx = np.moveaxis(x, -1, 1)
  got = np.stack(
    [np.asarray(fc.conv(xi, k_eqx, convention="equinox", padding="SAME")) for xi in x_eqx]
  )
  np.testing.assert_array_equal(np.moveaxis(got, 1, -1), np.asarray(want))


def test_a_user_made_convention_works_where_a_name_does():
  mine = fc.Convention(
    name="mine",
    layout="NWHC",
    kernel_layout="IOWH",
    flip=True,
    transpose_kernel_layout="WHOI",
    transpose_flip=False,
    linear_layout="OI",
  )
  x = ints((2, 6, 5, 3))  # N W H C
  k = ints((3, 4, 2, 3))  # I O W H
  want = fc.conv(x, k, flip=True, layout="NWHC", kernel_layout="IOWH")
  np.testing.assert_array_equal(np.asarray(fc.conv(x, k, convention=mine)), np.asarray(want))
  y = ints((2, 5, 3, 4))
  k_t = ints((2, 3, 4, 3))  # W H O I
  want_t = fc.conv_transpose(y, k_t, flip=False, layout="NWHC", kernel_layout="WHOI")
  np.testing.assert_array_equal(
    np.asarray(fc.conv_transpose(y, k_t, convention=mine)), np.asarray(want_t)
  )
  # convert_kernel: to pytorch, letters matched by name, and flipped.
  np.testing.assert_array_equal(
    fc.convert_kernel(k, mine, "pytorch"), k.transpose(1, 0, 3, 2)[:, :, ::-1, ::-1]
  )
  np.testing.assert_array_equal(
    fc.convert_kernel(k_t, mine, "pytorch", transposed=True), k_t.transpose(2, 3, 1, 0)
  )
  # ... and convert_params takes it too.
  tree = fc.convert_params({"conv": {"weight": k}}, mine, "pytorch", select={"*": "conv"})
  np.testing.assert_array_equal(tree["conv"]["weight"], fc.convert_kernel(k, mine, "pytorch"))


# ---------------------------------------------------------------------------
# The docs generated from the registry


def test_docs_conventions_md_is_what_the_registry_generates():
  path = ROOT / "docs" / "conventions.md"
  assert path.read_text() == _conventions_doc.render_conventions_md(), (
    "docs/conventions.md is stale: run `python -m flipconv._conventions_doc --write`"
  )


def test_readme_conventions_table_is_what_the_registry_generates():
  readme = (ROOT / "README.md").read_text()
  assert _conventions_doc.render_readme_table() in readme, (
    "README.md's Conventions table is stale: run `python -m flipconv._conventions_doc --write`"
  )


def test_every_convention_has_a_verification_record_whose_tests_exist():
  names = {c.name for c in fc.conventions.values()}
  assert set(registry.VERIFICATION) == names
  for name, checks in registry.VERIFICATION.items():
    assert checks, name
    covered = set()
    for check in checks:
      covered |= set(check.fields)
      if check.test:
        file, _, func = check.test.partition("::")
        source = (ROOT / file).read_text()
        assert re.search(rf"^def {re.escape(func)}\(", source, re.M), check.test
      else:
        assert check.source.startswith("https://"), (name, check)
    assert covered >= set(CONTRACT_FIELDS) - {"name"}, (name, set(CONTRACT_FIELDS) - covered)
