"""Whole PyTorch models ported with ``convert_params(..., like=variables)``, torch as the oracle.

Each model is built here in PyTorch (no torchvision), given random weights and
non-trivial BatchNorm statistics, put in eval mode, and written once more as a
plain Flax model: only the model definition, and one ``flatten=`` where the
model flattens a feature map. Its state_dict (torch tensors, as a user has
them) is ported onto the Flax model's variables and both models run the same
input; the outputs must agree to float32 rounding.

Targets: plain ``flax.linen`` (NHWC, ``like=model.init(...)`` with its call
order, or ``jax.eval_shape`` of it with sorted keys), ``fc.linen`` layers of
``convention="pytorch"`` (NCHW, ``dst="pytorch"``) and ``flax.nnx``
(``like=nnx.state(model)``, then ``nnx.update``).
"""

from __future__ import annotations

import functools

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flipconv as fc
from _reference import assert_matches, rel_err  # within _reference.PORT_TOL of the oracle
from flipconv._porting import OrderWarning

torch = pytest.importorskip("torch")
tnn = torch.nn

# A FlattenWarning where no flatten is meant is a bug; tests that expect one catch it.
pytestmark = [
  pytest.mark.filterwarnings("error::flipconv.FlattenWarning"),
  pytest.mark.filterwarnings("error::flipconv._porting.OrderWarning"),
]

# like's values are overwritten: a key whose random bits compile fast (threefry's
# take most of an init's time on CPU).
KEY = jax.random.key(0, impl="unsafe_rbg")


def setup_module():
  torch.manual_seed(0)


def randomize(model: tnn.Module, seed: int) -> tnn.Module:
  """Random weights everywhere, and BatchNorm statistics far from (0, 1); eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    for m in model.modules():
      if isinstance(m, (tnn.BatchNorm1d, tnn.BatchNorm2d)):
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        m.num_batches_tracked.fill_(11)
  return model.eval()


def torch_run(model: tnn.Module, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


def nhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def image(shape, seed=1) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# The Flax models below are written once for two targets: plain flax.linen (NHWC,
# nn.Conv) and fc.linen layers that hold PyTorch's weights as they are (NCHW,
# convention="pytorch"); nchw picks the second. Both pad as torch does.


def convs(nchw: bool):
  return functools.partial(fc.linen.Conv, convention="pytorch") if nchw else nn.Conv


def conv_transposes(nchw: bool):
  return (
    functools.partial(fc.linen.ConvTranspose, convention="pytorch") if nchw else nn.ConvTranspose
  )


def batchnorm(nchw: bool):
  return functools.partial(nn.BatchNorm, use_running_average=True, axis=1 if nchw else -1)


def max_pool(x, window, stride, pad, nchw: bool):
  if nchw:
    x = jnp.moveaxis(x, 1, -1)
  pads = ((pad, pad),) * 2
  x = nn.max_pool(x, (window, window), (stride, stride), padding=pads)
  return jnp.moveaxis(x, -1, 1) if nchw else x


# ---------------------------------------------------------------------------
# ResNet-18-shaped: BasicBlocks, BatchNorm, downsample, global pool, Linear

WIDTHS = (4, 8, 8, 16)


class TorchBlock(tnn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(cout)
    self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = tnn.Sequential(
        tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)
      )

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + identity)


class TorchResNet(tnn.Module):
  def __init__(self, classes=5):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, WIDTHS[0], 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(WIDTHS[0])
    self.maxpool = tnn.MaxPool2d(3, 2, 1)
    cin = WIDTHS[0]
    for i, w in enumerate(WIDTHS):
      stride = 1 if i == 0 else 2
      setattr(
        self, f"layer{i + 1}", tnn.Sequential(TorchBlock(cin, w, stride), TorchBlock(w, w, 1))
      )
      cin = w
    self.fc = tnn.Linear(WIDTHS[-1], classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def resnet():
  return randomize(TorchResNet(), seed=1)


# Plain flax.linen, compact, Flax's own names (Conv_0, BatchNorm_0, ...): matched by call order.


class Block(nn.Module):
  features: int
  strides: int = 1
  nchw: bool = False

  @nn.compact
  def __call__(self, x):
    conv, bn = convs(self.nchw), batchnorm(self.nchw)
    out = nn.relu(bn()(conv(self.features, (3, 3), self.strides, padding=1, use_bias=False)(x)))
    out = bn()(conv(self.features, (3, 3), padding=1, use_bias=False)(out))
    if self.strides != 1 or x.shape[1 if self.nchw else -1] != self.features:
      x = bn()(conv(self.features, (1, 1), self.strides, padding=0, use_bias=False)(x))
    return nn.relu(out + x)


class ResNet(nn.Module):
  classes: int = 5
  nchw: bool = False

  @nn.compact
  def __call__(self, x):
    conv, bn = convs(self.nchw), batchnorm(self.nchw)
    x = nn.relu(bn()(conv(WIDTHS[0], (7, 7), 2, padding=3, use_bias=False)(x)))
    x = max_pool(x, 3, 2, 1, self.nchw)
    for i, w in enumerate(WIDTHS):
      x = Block(w, 1 if i == 0 else 2, self.nchw)(x)
      x = Block(w, nchw=self.nchw)(x)
    return nn.Dense(self.classes)(x.mean((2, 3) if self.nchw else (1, 2)))


# The same, written with setup() and PyTorch's attribute names: matched by name.


class NamedBlock(nn.Module):
  features: int
  strides: int = 1
  project: bool = False

  def setup(self):
    self.conv1 = nn.Conv(self.features, (3, 3), self.strides, padding=1, use_bias=False)
    self.bn1 = nn.BatchNorm(use_running_average=True)
    self.conv2 = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)
    self.bn2 = nn.BatchNorm(use_running_average=True)
    if self.project:
      self.downsample = [
        nn.Conv(self.features, (1, 1), self.strides, padding=0, use_bias=False),
        nn.BatchNorm(use_running_average=True),
      ]

  def __call__(self, x):
    out = nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.project:
      x = self.downsample[1](self.downsample[0](x))
    return nn.relu(out + x)


class NamedResNet(nn.Module):
  classes: int = 5

  def setup(self):
    self.conv1 = nn.Conv(WIDTHS[0], (7, 7), 2, padding=3, use_bias=False)
    self.bn1 = nn.BatchNorm(use_running_average=True)
    cin, layers = WIDTHS[0], []
    for i, w in enumerate(WIDTHS):
      stride = 1 if i == 0 else 2
      layers.append([NamedBlock(w, stride, stride != 1 or cin != w), NamedBlock(w)])
      cin = w
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.fc = nn.Dense(self.classes)

  def __call__(self, x):
    x = nn.relu(self.bn1(self.conv1(x)))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x)
    return self.fc(x.mean((1, 2)))


def test_resnet_onto_linen_in_call_order(resnet):
  x = image((2, 3, 32, 32))
  model = ResNet()
  like = model.init(KEY, nhwc(x))
  variables = fc.convert_params(resnet.state_dict(), "pytorch", "flax", like=like)
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, like)
  assert_matches(jax.jit(model.apply)(variables, nhwc(x)), torch_run(resnet, x))
  # The plan: one row per target leaf, layer by layer in call order, all matched by order.
  plan = fc.plan_params(resnet.state_dict(), "pytorch", "flax", like=like)
  assert len(plan) == len(jax.tree.leaves(like))
  layers = list(dict.fromkeys(row.layer for row in plan))
  assert layers[:4] == ["Conv_0", "BatchNorm_0", "Block_0/Conv_0", "Block_0/BatchNorm_0"]
  assert layers[-1] == "Dense_0"
  assert [row.target for row in plan[1:5]] == [
    "params/BatchNorm_0/scale",
    "params/BatchNorm_0/bias",
    "batch_stats/BatchNorm_0/mean",
    "batch_stats/BatchNorm_0/var",
  ]
  assert [row.source for row in plan[:5]] == [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
  ]
  assert {row.matched_by for row in plan} == {"order"}


def test_resnet_onto_named_linen_from_eval_shape(resnet):
  x = image((2, 3, 32, 32))
  model = NamedResNet()
  like = jax.eval_shape(model.init, KEY, nhwc(x))
  variables = fc.convert_params(resnet.state_dict(), "pytorch", "flax", like=like)
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, like)
  assert all(isinstance(v, np.ndarray) for v in jax.tree.leaves(variables))  # like: no arrays
  assert_matches(jax.jit(model.apply)(variables, nhwc(x)), torch_run(resnet, x))
  # A FrozenDict like gives a FrozenDict, with the same leaves.
  frozen = fc.convert_params(resnet.state_dict(), "pytorch", "flax", like=flax.core.freeze(like))
  assert isinstance(frozen, flax.core.FrozenDict)
  jax.tree.map(np.testing.assert_array_equal, flax.core.unfreeze(frozen), variables)


def test_resnet_plan_names_every_source_tensor_as_the_state_dict_does(resnet):
  x = image((1, 3, 32, 32))
  sd = resnet.state_dict()
  like = jax.eval_shape(NamedResNet().init, KEY, nhwc(x))
  plan = fc.plan_params(sd, "pytorch", "flax", like=like)
  n_target = len(jax.tree.leaves(like))
  assert len(plan) == n_target
  # Every state_dict tensor but the step counters, each named exactly as in the file.
  want = {k for k in sd if not k.endswith("num_batches_tracked")}
  assert {row.source for row in plan} == want
  assert {row.matched_by for row in plan} == {"name"}  # layer1_0 is layer1.0
  by_target = {row.target: row for row in plan}
  row = by_target["batch_stats/layer1_0/bn1/var"]
  assert row.source == "layer1.0.bn1.running_var"
  assert by_target["params/layer2_0/downsample_0/kernel"].source == "layer2.0.downsample.0.weight"
  assert by_target["params/layer2_0/downsample_0/kernel"].new_shape == (1, 1, 4, 8)
  text = str(plan)
  assert "layer1.0.bn1.running_var" in text and "params/fc/kernel" in text


def test_resnet_onto_fc_linen_pytorch_layers(resnet):
  x = image((2, 3, 32, 32))
  model = ResNet(nchw=True)
  like = model.init(KEY, x)
  variables = fc.convert_params(resnet.state_dict(), "pytorch", "pytorch", like=like)
  # fc.linen's pytorch convs hold torch's weights unchanged.
  np.testing.assert_array_equal(
    variables["params"]["Conv_0"]["kernel"], resnet.conv1.weight.detach().numpy()
  )
  assert_matches(jax.jit(model.apply)(variables, x), torch_run(resnet, x))


# nnx, with PyTorch's attribute names (a list is a list): matched by name.


class NnxBlock(nnx.Module):
  def __init__(self, cin, cout, stride, rngs):
    self.conv1 = nnx.Conv(cin, cout, (3, 3), stride, padding=1, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nnx.data(
        [
          nnx.Conv(cin, cout, (1, 1), stride, padding=0, use_bias=False, rngs=rngs),
          nnx.BatchNorm(cout, use_running_average=True, rngs=rngs),
        ]
      )

  def __call__(self, x):
    out = nnx.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
      x = self.downsample[1](self.downsample[0](x))
    return nnx.relu(out + x)


class NnxResNet(nnx.Module):
  def __init__(self, rngs, classes=5):
    self.conv1 = nnx.Conv(3, WIDTHS[0], (7, 7), 2, padding=3, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(WIDTHS[0], use_running_average=True, rngs=rngs)
    cin = WIDTHS[0]
    for i, w in enumerate(WIDTHS):
      stride = 1 if i == 0 else 2
      blocks = nnx.List([NnxBlock(cin, w, stride, rngs), NnxBlock(w, w, 1, rngs)])
      setattr(self, f"layer{i + 1}", blocks)
      cin = w
    self.fc = nnx.Linear(WIDTHS[-1], classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x)
    return self.fc(x.mean((1, 2)))


def test_resnet_onto_nnx_state_from_requires_grad_tensors(resnet):
  x = image((2, 3, 32, 32))
  model = NnxResNet(nnx.Rngs(KEY))
  state = nnx.state(model)
  # keep_vars: the nn.Parameters themselves (requires_grad=True), as named_parameters gives.
  sd = resnet.state_dict(keep_vars=True)
  assert sd["conv1.weight"].requires_grad
  new = fc.convert_params(sd, "pytorch", "flax", like=state)
  assert type(new) is type(state)
  plan = fc.plan_params(sd, "pytorch", "flax", like=state)
  assert len(plan) == len(jax.tree.leaves(state))
  rows = {row.target: row for row in plan}  # an nnx.State's paths have no collection
  assert rows["layer1/0/bn1/var"].source == "layer1.0.bn1.running_var"
  assert rows["layer2/0/downsample/1/scale"].source == "layer2.0.downsample.1.weight"
  assert {row.matched_by for row in plan} == {"name"}
  nnx.update(model, new)
  np.testing.assert_array_equal(
    np.asarray(model.layer2[0].bn1.var[...]), resnet.layer2[0].bn1.running_var.numpy()
  )
  assert_matches(nnx.jit(lambda m, x: m(x))(model, nhwc(x)), torch_run(resnet, x))


def test_resnet_onto_an_abstract_nnx_model(resnet):
  # nnx.eval_shape builds no weights; split, port, merge.
  x = image((2, 3, 32, 32))
  graphdef, state = nnx.split(nnx.eval_shape(lambda: NnxResNet(nnx.Rngs(0))))
  model = nnx.merge(graphdef, fc.convert_params(resnet.state_dict(), "pytorch", "flax", like=state))
  assert_matches(nnx.jit(lambda m, x: m(x))(model, nhwc(x)), torch_run(resnet, x))


def test_torch_tensors_without_like(resnet):
  out = fc.convert_params(resnet.state_dict(keep_vars=True), "pytorch", "flax")
  kernel = out["layer2.0.downsample.0.weight"]
  assert isinstance(kernel, np.ndarray)
  want = resnet.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(kernel, want)
  assert isinstance(out["layer1.0.bn1.running_var"], np.ndarray)


# ---------------------------------------------------------------------------
# VGG-shaped: a feature map flattened into a Linear, in torch's order or after a permute

VGG_C, VGG_H, VGG_W = 16, 4, 3  # the feature map before the flatten (non-square: H != W)


class TorchVGG(tnn.Module):
  def __init__(self, permute: bool):
    super().__init__()
    self.permute = permute
    self.features = tnn.Sequential(
      tnn.Conv2d(3, 8, 3, padding=1),
      tnn.ReLU(),
      tnn.Conv2d(8, 8, 3, padding=1),
      tnn.ReLU(),
      tnn.MaxPool2d(2),
      tnn.Conv2d(8, VGG_C, 3, padding=1),
      tnn.ReLU(),
      tnn.MaxPool2d(2),
    )
    self.classifier = tnn.Sequential(
      tnn.Linear(VGG_C * VGG_H * VGG_W, 32), tnn.ReLU(), tnn.Linear(32, 5)
    )

  def forward(self, x):
    x = self.features(x)
    if self.permute:  # MTCNN flattens (N, W, H, C)
      x = x.permute(0, 3, 2, 1)
    return self.classifier(torch.flatten(x, 1))


class VGG(nn.Module):
  nchw: bool = False

  @nn.compact
  def __call__(self, x):
    conv = convs(self.nchw)
    x = nn.relu(conv(8, (3, 3), padding=1)(x))
    x = nn.relu(conv(8, (3, 3), padding=1)(x))
    x = max_pool(x, 2, 2, 0, self.nchw)
    x = nn.relu(conv(VGG_C, (3, 3), padding=1)(x))
    x = max_pool(x, 2, 2, 0, self.nchw)
    x = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
    return nn.Dense(5)(x)


VGG_SIZES = {"C": VGG_C, "H": VGG_H, "W": VGG_W}
VGG_X = image((2, 3, 4 * VGG_H, 4 * VGG_W), seed=3)


@pytest.mark.parametrize("permute, order", [(False, "CHW"), (True, "WHC")])
@pytest.mark.parametrize("abstract", [False, True])
def test_vgg_flatten_onto_linen(permute, order, abstract):
  net = randomize(TorchVGG(permute), seed=2)
  model, x = VGG(), nhwc(VGG_X)
  like = model.init(KEY, x)
  if abstract:
    like = jax.eval_shape(model.init, KEY, x)
  flatten = {"Dense_0": (order, "HWC", VGG_SIZES)}
  variables = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like, flatten=flatten)
  assert_matches(jax.jit(model.apply)(variables, x), torch_run(net, VGG_X))


@pytest.mark.parametrize("permute, order", [(False, "CHW"), (True, "WHC")])
def test_vgg_without_flatten_warns_naming_the_layer_and_is_wrong(permute, order):
  net = randomize(TorchVGG(permute), seed=2)
  model, x = VGG(), nhwc(VGG_X)
  like = model.init(KEY, x)
  with pytest.warns(fc.FlattenWarning, match="'Dense_0'") as record:
    variables = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like)
  assert len(record) == 1  # Dense_1 follows a dense layer, not a flatten
  assert rel_err(jax.jit(model.apply)(variables, x), torch_run(net, VGG_X)) > 0.05


@pytest.mark.parametrize("permute, order", [(False, "CHW"), (True, "WHC")])
def test_vgg_flatten_onto_fc_linen_pytorch_layers(permute, order):
  net = randomize(TorchVGG(permute), seed=2)
  model = VGG(nchw=True)
  like = jax.eval_shape(model.init, KEY, VGG_X)  # Conv_0..2, Dense_0..1: natural order
  # The Flax model flattens NCHW: CHW, so the permuted model still needs a rule.
  flatten = {"Dense_0": (order, "CHW", VGG_SIZES)}
  variables = fc.convert_params(net.state_dict(), "pytorch", "pytorch", like=like, flatten=flatten)
  assert_matches(jax.jit(model.apply)(variables, VGG_X), torch_run(net, VGG_X))


# ---------------------------------------------------------------------------
# U-Net-shaped: ConvTranspose2d (one with as many inputs as outputs) and a skip connection


class TorchUNet(tnn.Module):
  def __init__(self):
    super().__init__()
    self.enc1 = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU())
    self.enc2 = tnn.Sequential(tnn.Conv2d(4, 8, 3, padding=1), tnn.ReLU())
    self.up = tnn.ConvTranspose2d(8, 4, 2, stride=2)
    self.dec = tnn.Sequential(tnn.Conv2d(8, 4, 3, padding=1), tnn.ReLU())
    self.up2 = tnn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
    self.head = tnn.Conv2d(4, 2, 1)

  def forward(self, x):
    e1 = self.enc1(x)
    e2 = self.enc2(torch.nn.functional.max_pool2d(e1, 2))
    d = self.dec(torch.cat([self.up(e2), e1], 1))
    return self.head(torch.relu(self.up2(d)))


class UNet(nn.Module):
  nchw: bool = False
  names: tuple = (None, None)  # the ConvTransposes' names: Flax's own by default

  @nn.compact
  def __call__(self, x):
    conv, convt, bn = convs(self.nchw), conv_transposes(self.nchw), batchnorm(self.nchw)
    axis = 1 if self.nchw else -1
    e1 = nn.relu(bn()(conv(4, (3, 3), padding=1)(x)))
    e2 = nn.relu(conv(8, (3, 3), padding=1)(max_pool(e1, 2, 2, 0, self.nchw)))
    if self.nchw:  # fc.linen.ConvTranspose pads as torch does
      up = convt(4, (2, 2), strides=2, padding=0, name=self.names[0])(e2)
    else:  # Flax pads the dilated input: k - 1 - p before, k - 1 - p + output_padding after
      up = convt(4, (2, 2), strides=(2, 2), padding="VALID", name=self.names[0])(e2)
    d = nn.relu(conv(4, (3, 3), padding=1)(jnp.concatenate([up, e1], axis)))
    if self.nchw:
      up2 = convt(4, (3, 3), strides=2, padding=1, output_padding=1, name=self.names[1])(d)
    else:
      up2 = convt(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), name=self.names[1])(d)
    return conv(2, (1, 1), padding=0)(nn.relu(up2))


@pytest.fixture(scope="module")
def unet():
  return randomize(TorchUNet(), seed=4)


@pytest.mark.parametrize("nchw", [False, True])
def test_unet_with_transposed_convs(unet, nchw):
  x = image((2, 3, 8, 8), seed=5)
  model = UNet(nchw=nchw)
  xin = x if nchw else nhwc(x)
  like = model.init(KEY, xin)
  dst = "pytorch" if nchw else "flax"
  variables = fc.convert_params(unet.state_dict(), "pytorch", dst, like=like)
  got = jax.jit(model.apply)(variables, xin)
  assert_matches(got if nchw else np.moveaxis(np.asarray(got), -1, 1), torch_run(unet, x))
  plan = fc.plan_params(unet.state_dict(), "pytorch", dst, like=like)
  row = next(r for r in plan if r.target == "params/ConvTranspose_1/kernel")
  assert row.source == "up2.weight" and "transposed" in row.change


# ---------------------------------------------------------------------------
# MobileNet-shaped: depthwise convs (groups = C, one with a channel multiplier) and BatchNorm

MOBILE = ((3, 8, 3, 2, 1), (8, 8, 3, 1, 8), (8, 16, 1, 1, 1), (16, 32, 3, 2, 16), (32, 16, 1, 1, 1))


class TorchMobileNet(tnn.Module):
  def __init__(self):
    super().__init__()
    self.features = tnn.Sequential(
      *(
        tnn.Sequential(
          tnn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False),
          tnn.BatchNorm2d(cout),
          tnn.ReLU6(),
        )
        for cin, cout, k, s, g in MOBILE
      )
    )
    self.classifier = tnn.Linear(16, 5)

  def forward(self, x):
    return self.classifier(self.features(x).mean((2, 3)))


class MobileNet(nn.Module):
  nchw: bool = False

  @nn.compact
  def __call__(self, x):
    conv, bn = convs(self.nchw), batchnorm(self.nchw)
    for _, cout, k, s, g in MOBILE:
      x = conv(cout, (k, k), s, padding=k // 2, feature_group_count=g, use_bias=False)(x)
      x = nn.relu6(bn()(x))
    return nn.Dense(5)(x.mean((2, 3) if self.nchw else (1, 2)))


@pytest.fixture(scope="module")
def mobilenet():
  return randomize(TorchMobileNet(), seed=6)


def test_mobilenet_depthwise_onto_linen(mobilenet):
  x = image((2, 3, 16, 16), seed=7)
  model = MobileNet()
  like = model.init(KEY, nhwc(x))
  variables = fc.convert_params(mobilenet.state_dict(), "pytorch", "flax", like=like)
  assert variables["params"]["Conv_3"]["kernel"].shape == (3, 3, 1, 32)
  assert_matches(jax.jit(model.apply)(variables, nhwc(x)), torch_run(mobilenet, x))


def test_mobilenet_onto_fc_linen_pytorch_layers(mobilenet):
  x = image((2, 3, 16, 16), seed=7)
  model = MobileNet(nchw=True)
  like = jax.eval_shape(model.init, KEY, x)
  variables = fc.convert_params(mobilenet.state_dict(), "pytorch", "pytorch", like=like)
  assert_matches(jax.jit(model.apply)(variables, x), torch_run(mobilenet, x))


# ---------------------------------------------------------------------------
# A text CNN: Embedding, Conv1d, LayerNorm, PReLU (one parameter)

VOCAB, DIM = 50, 8


class TorchTextCNN(tnn.Module):
  def __init__(self):
    super().__init__()
    self.embedding = tnn.Embedding(VOCAB, DIM)
    self.conv = tnn.Conv1d(DIM, 12, 3, padding=1)
    self.norm = tnn.LayerNorm(12)
    self.act = tnn.PReLU()
    self.conv2 = tnn.Conv1d(12, 6, 5, padding=2)
    self.fc = tnn.Linear(6, 4)

  def forward(self, tokens):
    x = self.conv(self.embedding(tokens).transpose(1, 2))
    x = self.act(self.norm(x.transpose(1, 2)))
    return self.fc(self.conv2(x.transpose(1, 2)).amax(-1))


class TextCNN(nn.Module):
  nchw: bool = False

  @nn.compact
  def __call__(self, tokens):
    conv = convs(self.nchw)
    x = nn.Embed(VOCAB, DIM)(tokens)  # (N, L, D)
    if self.nchw:
      x = jnp.swapaxes(x, 1, 2)
    x = conv(12, (3,), padding=1)(x)
    if self.nchw:
      x = jnp.swapaxes(x, 1, 2)
    x = nn.PReLU()(nn.LayerNorm(epsilon=1e-5)(x))  # torch's LayerNorm epsilon
    if self.nchw:
      return nn.Dense(4)(conv(6, (5,), padding=2)(jnp.swapaxes(x, 1, 2)).max(-1))
    return nn.Dense(4)(conv(6, (5,), padding=2)(x).max(1))


@pytest.fixture(scope="module")
def textcnn():
  net = randomize(TorchTextCNN(), seed=8)
  with torch.no_grad():
    net.act.weight.fill_(0.2)  # a slope that shows: randn may give ~1 (no nonlinearity)
  return net


@pytest.mark.parametrize("nchw, abstract", [(False, False), (False, True), (True, True)])
def test_text_cnn(textcnn, nchw, abstract):
  tokens = np.random.default_rng(9).integers(0, VOCAB, (3, 11)).astype(np.int32)
  model = TextCNN(nchw=nchw)
  init = functools.partial(model.init, KEY, tokens)
  like = jax.eval_shape(init) if abstract else init()
  variables = fc.convert_params(
    textcnn.state_dict(), "pytorch", "pytorch" if nchw else "flax", like=like
  )
  assert np.shape(variables["params"]["PReLU_0"]["negative_slope"]) == ()
  want = torch_run(textcnn, tokens.astype(np.int64))
  assert_matches(jax.jit(model.apply)(variables, tokens), want)


def test_text_cnn_embedding_under_a_name_that_does_not_say_so(textcnn):
  # GPT-2 calls its token embedding "wte": a lone rank-2 weight, like a Linear without bias.
  sd = {k.replace("embedding.", "wte."): v for k, v in textcnn.state_dict().items()}
  tokens = np.random.default_rng(9).integers(0, VOCAB, (3, 11)).astype(np.int32)
  model = TextCNN()
  like = model.init(KEY, tokens)
  variables = fc.convert_params(sd, "pytorch", "flax", like=like)
  want = torch_run(textcnn, tokens.astype(np.int64))
  assert_matches(jax.jit(model.apply)(variables, tokens), want)


# ---------------------------------------------------------------------------
# A BatchNorm without scale and bias: a layer that only batch_stats has


class TorchPlainBN(tnn.Module):
  def __init__(self):
    super().__init__()
    self.c1, self.b1 = tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4, affine=False)
    self.c2, self.b2 = tnn.Conv2d(4, 4, 3, padding=1), tnn.BatchNorm2d(4)
    self.fc = tnn.Linear(4, 2)

  def forward(self, x):
    x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
    return self.fc(x.mean((2, 3)))


class PlainBN(nn.Module):
  @nn.compact
  def __call__(self, x):
    bn = functools.partial(nn.BatchNorm, use_running_average=True)
    x = nn.relu(bn(use_scale=False, use_bias=False)(nn.Conv(4, (3, 3), padding=1)(x)))
    x = nn.relu(bn()(nn.Conv(4, (3, 3), padding=1)(x)))
    return nn.Dense(2)(x.mean((1, 2)))


def test_batchnorm_without_scale_and_bias_keeps_its_place():
  net = randomize(TorchPlainBN(), seed=10)
  x = image((2, 3, 8, 8), seed=11)
  model = PlainBN()
  like = model.init(KEY, nhwc(x))
  variables = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like)
  assert_matches(jax.jit(model.apply)(variables, nhwc(x)), torch_run(net, x))


def test_unet_from_eval_shape_needs_order(unet):
  # Sorted keys put ConvTranspose_* after every Conv_*: order matching must not guess.
  x = image((2, 3, 8, 8), seed=5)
  model = UNet()
  like = jax.eval_shape(model.init, KEY, nhwc(x))
  with pytest.raises(ValueError, match="order="):
    fc.convert_params(unet.state_dict(), "pytorch", "flax", like=like)
  order = ["Conv_0", "BatchNorm_0", "Conv_1", "ConvTranspose_0", "Conv_2", "ConvTranspose_1"]
  variables = fc.convert_params(
    unet.state_dict(), "pytorch", "flax", like=like, order=[*order, "Conv_3"]
  )
  got = np.moveaxis(np.asarray(jax.jit(model.apply)(variables, nhwc(x))), -1, 1)
  assert_matches(got, torch_run(unet, x))


# ---------------------------------------------------------------------------
# Indices that differ: nn.Sequential counts its ReLUs, a Flax list does not


class TorchStack(tnn.Module):
  def __init__(self):
    super().__init__()
    convs = [tnn.Conv2d(4, 4, 3, padding=1) for _ in range(3)]
    self.body = tnn.Sequential(convs[0], tnn.ReLU(), convs[1], tnn.ReLU(), convs[2])

  def forward(self, x):
    return self.body(x)


class Stack(nn.Module):
  def setup(self):
    self.body = [nn.Conv(4, (3, 3), padding=1) for _ in range(3)]  # body_0, body_1, body_2

  def __call__(self, x):
    x = nn.relu(self.body[0](x))
    return self.body[2](nn.relu(self.body[1](x)))


class NnxStack(nnx.Module):
  def __init__(self, rngs):
    self.body = nnx.List([nnx.Conv(4, 4, (3, 3), padding=1, rngs=rngs) for _ in range(3)])

  def __call__(self, x):
    x = nnx.relu(self.body[0](x))
    return self.body[2](nnx.relu(self.body[1](x)))


def test_list_indices_that_differ_from_the_sequentials_are_not_names():
  # body.2 is the second conv in torch, body_2 / body/2 the third in Flax: same shapes,
  # so a match by name would swap two layers silently.
  net = randomize(TorchStack(), seed=12)
  x = image((2, 4, 6, 6), seed=13)
  want = torch_run(net, x)
  model = Stack()
  like = model.init(KEY, nhwc(x))
  variables = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like)
  got = np.moveaxis(np.asarray(jax.jit(model.apply)(variables, nhwc(x))), -1, 1)
  assert_matches(got, want)
  nmodel = NnxStack(nnx.Rngs(KEY))
  nnx.update(nmodel, fc.convert_params(net.state_dict(), "pytorch", "flax", like=nnx.state(nmodel)))
  assert_matches(np.moveaxis(np.asarray(nmodel(nhwc(x))), -1, 1), want)


def test_unet_transposed_conv_under_a_plain_name_needs_select(unet):
  # "up2" (4 -> 4 channels) fits as a conv and as a transposed conv: only select= can say.
  x = image((2, 3, 8, 8), seed=5)
  model = UNet(names=("up", "up2"))
  like = model.init(KEY, nhwc(x))
  want = torch_run(unet, x)
  run = lambda v: np.moveaxis(np.asarray(jax.jit(model.apply)(v, nhwc(x))), -1, 1)
  guessed = fc.convert_params(unet.state_dict(), "pytorch", "flax", like=like)
  assert rel_err(run(guessed), want) > 0.05  # up (8 -> 4) was told by its shape; up2 not
  told = fc.convert_params(
    unet.state_dict(), "pytorch", "flax", like=like, select={"up2/kernel": "conv_transpose"}
  )
  assert_matches(run(told), want)


# ---------------------------------------------------------------------------
# A checkpoint file's order: safetensors lists tensors sorted as strings


class TorchDeep(tnn.Module):
  def __init__(self):
    super().__init__()
    layers = []
    for _ in range(6):  # convs at features.0, .2, ..., .10: "features.10" sorts before ".2"
      layers += [tnn.Conv2d(4, 4, 3, padding=1), tnn.ReLU()]
    self.features = tnn.Sequential(*layers)

  def forward(self, x):
    return self.features(x)


class Deep(nn.Module):
  @nn.compact
  def __call__(self, x):
    for _ in range(6):
      x = nn.relu(nn.Conv(4, (3, 3), padding=1)(x))
    return x


@pytest.mark.parametrize("abstract", [False, True])
def test_safetensors_file_order(tmp_path, abstract):
  st = pytest.importorskip("safetensors.numpy")
  net = randomize(TorchDeep(), seed=14)
  st.save_file({k: v.numpy() for k, v in net.state_dict().items()}, tmp_path / "m.safetensors")
  sd = st.load_file(tmp_path / "m.safetensors")
  assert list(sd)[2:4] == ["features.10.bias", "features.10.weight"]  # sorted as strings
  x = image((2, 4, 6, 6), seed=15)
  model = Deep()
  like = (jax.eval_shape if abstract else lambda f, *a: f(*a))(model.init, KEY, nhwc(x))
  variables = fc.convert_params(sd, "pytorch", "flax", like=like)
  got = np.moveaxis(np.asarray(jax.jit(model.apply)(variables, nhwc(x))), -1, 1)
  assert_matches(got, torch_run(net, x))
  plan = fc.plan_params(sd, "pytorch", "flax", like=like)
  assert [r.source for r in plan if r.target.endswith("kernel")] == [
    f"features.{i}.weight" for i in (0, 2, 4, 6, 8, 10)
  ]


# ---------------------------------------------------------------------------
# Sorted keys under names that say nothing of the call order


class TorchEncDec(tnn.Module):
  def __init__(self):
    super().__init__()
    self.encoder = tnn.Conv2d(4, 4, 3, padding=1)
    self.decoder = tnn.Conv2d(4, 4, 3, padding=1)

  def forward(self, x):
    return self.decoder(torch.relu(self.encoder(x)))


class EncDec(nn.Module):
  def setup(self):
    self.enc = nn.Conv(4, (3, 3), padding=1)
    self.dec = nn.Conv(4, (3, 3), padding=1)

  def __call__(self, x):
    return self.dec(nn.relu(self.enc(x)))


def test_sorted_like_warns_where_the_order_of_names_is_a_guess():
  net = randomize(TorchEncDec(), seed=16)
  x = image((2, 4, 6, 6), seed=17)
  want = torch_run(net, x)
  model = EncDec()
  run = lambda v: np.moveaxis(np.asarray(jax.jit(model.apply)(v, nhwc(x))), -1, 1)
  like = jax.eval_shape(model.init, KEY, nhwc(x))  # "dec" sorts before "enc"
  with pytest.warns(OrderWarning, match="'dec' before 'enc'"):
    swapped = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like)
  assert rel_err(run(swapped), want) > 0.05  # what the warning is for
  # The call order (init, or order=) is right, and quiet.
  for kwargs in ({"like": model.init(KEY, nhwc(x))}, {"like": like, "order": ["enc", "dec"]}):
    assert_matches(run(fc.convert_params(net.state_dict(), "pytorch", "flax", **kwargs)), want)


# ---------------------------------------------------------------------------
# MTCNN's ONet, shrunk: PReLU per channel, flatten after permute(0, 3, 2, 1), two heads


class TorchONet(tnn.Module):
  def __init__(self):
    super().__init__()
    self.conv1, self.prelu1 = tnn.Conv2d(3, 4, 3), tnn.PReLU(4)
    self.pool1 = tnn.MaxPool2d(2, 2)
    self.conv2, self.prelu2 = tnn.Conv2d(4, 6, 3), tnn.PReLU(6)
    self.dense5, self.prelu5 = tnn.Linear(6 * 3 * 2, 16), tnn.PReLU(16)
    self.dense6_1, self.dense6_2 = tnn.Linear(16, 2), tnn.Linear(16, 4)

  def forward(self, x):
    x = self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))
    x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
    return torch.cat([self.dense6_1(x), self.dense6_2(x)], 1)


class ChannelPReLU(nn.Module):  # nn.PReLU has one slope; MTCNN has one per channel
  @nn.compact
  def __call__(self, x):
    slope = self.param("negative_slope", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, slope * x)


class ONet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = ChannelPReLU()(nn.Conv(4, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = ChannelPReLU()(nn.Conv(6, (3, 3), padding="VALID")(x))
    x = ChannelPReLU()(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    return jnp.concatenate([nn.Dense(2)(x), nn.Dense(4)(x)], 1)


def test_mtcnn_onet_shaped():
  net = randomize(TorchONet(), seed=18)
  x = image((2, 3, 12, 10), seed=19)  # -> (6, 3, 2) before the flatten
  model = ONet()
  like = model.init(KEY, nhwc(x))
  flatten = {"Dense_0": ("WHC", "HWC", {"C": 6, "H": 3, "W": 2})}
  variables = fc.convert_params(net.state_dict(), "pytorch", "flax", like=like, flatten=flatten)
  assert_matches(jax.jit(model.apply)(variables, nhwc(x)), torch_run(net, x))
