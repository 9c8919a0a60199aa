"""A straightforward eager PyTorch version of the MNIST SGAN, for timing.

It exists only to measure sgan_jax against "the same networks in eager
PyTorch" (`benchmarks/compare_torch.py`); nothing in `sgan_jax` imports it.
torch is an optional extra (`pip install torch==2.13.0`, the CPU wheel).

The networks are those `configs/mnist.py` builds (`architectures.py`,
`models.py`) with the same widths and parameter counts, in PyTorch's own
NCHW layout:

  E   conv 5x5 valid 1->32, ReLU, maxpool 2, conv 5x5 valid 32->32, ReLU,
      maxpool 2, flatten (fc3 input 512), fc3 256 + ReLU, fc4 10.
  G1  [z1 (50), onehot (10)] -> 512 BN ReLU -> 512 BN ReLU -> 256 ReLU.
  G0  z0 (50) -> 128 BN ReLU; [fc3 (256), that] -> 2048 BN ReLU ->
      (128, 4, 4) -> ConvT 5 s2 -> 8x8x128 BN ReLU -> ConvT 5 s1 valid ->
      12x12x64 BN ReLU -> ConvT 5 s2 -> 24x24x64 BN ReLU -> ConvT 5 s1 valid
      (bias) -> 28x28x1 sigmoid.
  D0  conv 5x5 s2 pad 2 32/64/128, LeakyReLU(0.2) -> dense 256 LeakyReLU ->
      heads: adversarial 1, Q 50 + sigmoid.
  D1  256 -> 256 -> 256 (LeakyReLU) -> the same heads.

Biasless linear/transposed-conv layers feed every BatchNorm (momentum 0.1 in
PyTorch's convention = Flax's 0.9, epsilon 1e-6), as ours.

Training mirrors `sgan_jax.steps` with the MNIST config (binary D,
non-saturating loss, ent_weight 10, cond_weight 1, one G update per D update,
joint_lower_weight 0, no EMA since ema_decay is 0):

* stack iteration i: real h_1 = E(x) up to fc3 (no grad); one D_i update
  (G_i's fake under no_grad with batch-statistics BN that leaves G's running
  averages alone, as ours; real and fake in two separate D passes; loss
  0.5 (BCE(real, 1) + BCE(fake, 0)) + 10 MSE(Q(fake), z)); then one G_i update
  with fresh z (non-saturating BCE(D(fake), 1) + conditional + 10 MSE(Q, z);
  conditional = MSE(E_fc3(G0(.)), h_1) for stack 0, CE(E_fc4(G1(.)), y) for
  stack 1). D's and E's parameters get no gradient in G's update.
* joint iteration: top-down fakes onehot(y) -> G1 -> G0 (G0's condition
  detached, joint_lower_weight 0); one update of both D's on the summed D
  losses, then one of both G's on the summed G losses (fresh z).
* encoder iteration: CE of E(x), Adam(1e-3).

Adam(1e-4, betas (0.5, 0.999)) for every G and D. The metrics our steps
return (loss terms, D accuracies, sample accuracy) are computed as tensors too.

Known differences from ours that do not change the amount of work: weight
init details, Adam's epsilon (PyTorch adds 1e-8 outside the square root,
ours 1e-8 inside), the (128, 4, 4) vs (4, 4, 128) reshape and the flatten
order, and the transposed convolutions' spatial alignment (PyTorch's
`padding=2, output_padding=1` pads the dilated input (2, 3), Flax's 'SAME'
(3, 2), and Flax does not flip the kernel), PyTorch's unbiased running
variance. The same inputs do not give the same numbers; this is a timing
reference, not a port.
"""

import contextlib

import torch
from torch import nn
import torch.nn.functional as F

Z_DIM = 50
NUM_CLASSES = 10
ENT_WEIGHT = 10.0
_BN = dict(eps=1e-6, momentum=0.1)


def _lrelu(x):
  return F.leaky_relu(x, 0.2)


class Encoder(nn.Module):
  """E: image -> fc3 features -> logits."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 5)
    self.conv2 = nn.Conv2d(32, 32, 5)
    self.fc3 = nn.Linear(4 * 4 * 32, 256)
    self.fc4 = nn.Linear(256, NUM_CLASSES)

  def features(self, x):
    h = F.max_pool2d(F.relu(self.conv1(x)), 2)
    h = F.max_pool2d(F.relu(self.conv2(h)), 2)
    return F.relu(self.fc3(h.flatten(1)))

  def logits(self, h):
    return self.fc4(h)

  def forward(self, x):
    return self.logits(self.features(x))


def _dense_bn(n_in, n_out):
  return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out, **_BN),
          nn.ReLU()]


class FeatureGenerator(nn.Module):
  """G1: (onehot, z1) -> fc3 features."""

  def __init__(self, cond_dim=NUM_CLASSES, out_dim=256):
    super().__init__()
    self.net = nn.Sequential(*_dense_bn(Z_DIM + cond_dim, 512),
                             *_dense_bn(512, 512),
                             nn.Linear(512, out_dim), nn.ReLU())

  def forward(self, cond, z):
    return self.net(torch.cat([z, cond], 1))


class ImageGenerator(nn.Module):
  """G0: (fc3 features, z0) -> 1x28x28 image in [0, 1]."""

  def __init__(self, cond_dim=256):
    super().__init__()
    self.z_embed = nn.Sequential(*_dense_bn(Z_DIM, 128))
    self.project = nn.Sequential(*_dense_bn(cond_dim + 128, 4 * 4 * 128))
    self.deconvs = nn.Sequential(
        nn.ConvTranspose2d(128, 128, 5, 2, 2, output_padding=1, bias=False),
        nn.BatchNorm2d(128, **_BN), nn.ReLU(),   # 8x8
        nn.ConvTranspose2d(128, 64, 5, 1, 0, bias=False),
        nn.BatchNorm2d(64, **_BN), nn.ReLU(),    # 12x12
        nn.ConvTranspose2d(64, 64, 5, 2, 2, output_padding=1, bias=False),
        nn.BatchNorm2d(64, **_BN), nn.ReLU(),    # 24x24
        nn.ConvTranspose2d(64, 1, 5, 1, 0),      # 28x28
        nn.Sigmoid())

  def forward(self, cond, z):
    h = self.project(torch.cat([cond, self.z_embed(z)], 1))
    return self.deconvs(h.view(-1, 128, 4, 4))


class _Heads(nn.Module):

  def __init__(self, n_in):
    super().__init__()
    self.adv = nn.Linear(n_in, 1)
    self.q = nn.Linear(n_in, Z_DIM)

  def forward(self, h):
    return self.adv(h), torch.sigmoid(self.q(h))


class ImageDiscriminator(nn.Module):
  """D0 + Q0: image -> (adversarial logit, z0 prediction)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 5, 2, 2)     # 14x14
    self.conv2 = nn.Conv2d(32, 64, 5, 2, 2)    # 7x7
    self.conv3 = nn.Conv2d(64, 128, 5, 2, 2)   # 4x4
    self.dense = nn.Linear(4 * 4 * 128, 256)
    self.heads = _Heads(256)

  def forward(self, x):
    h = _lrelu(self.conv1(x))
    h = _lrelu(self.conv2(h))
    h = _lrelu(self.conv3(h))
    return self.heads(_lrelu(self.dense(h.flatten(1))))


class FeatureDiscriminator(nn.Module):
  """D1 + Q1: fc3 features -> (adversarial logit, z1 prediction)."""

  def __init__(self, in_dim=256):
    super().__init__()
    self.fc1 = nn.Linear(in_dim, 256)
    self.fc2 = nn.Linear(256, 256)
    self.heads = _Heads(256)

  def forward(self, h):
    return self.heads(_lrelu(self.fc2(_lrelu(self.fc1(h)))))


def _init_gan(module):
  """N(0, 0.02) weights and zero biases, BN scale 1 and offset 0."""
  for m in module.modules():
    if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)


def num_params(module) -> int:
  return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def frozen_bn_stats(module):
  """Batch-statistics BN that leaves the running averages unchanged (ours:
  G's averages move only in G's own update)."""
  bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
  saved = [m.momentum for m in bns]
  for m in bns:
    m.momentum = 0.0
  try:
    yield
  finally:
    for m, mom in zip(bns, saved):
      m.momentum = mom


def _requires_grad(module, flag: bool):
  for p in module.parameters():
    p.requires_grad_(flag)


def _adam(params, lr, betas, impl):
  kw = {} if impl == 'default' else {impl: True}
  return torch.optim.Adam(params, lr=lr, betas=betas, **kw)


class TorchSGAN:
  """The MNIST SGAN networks, optimizers and one iteration of each phase.

  Each `*_step(images_u8, labels)` takes an NCHW uint8 batch and int64
  labels, converts the images inside the step (as our steps do) and returns
  a dict of metric tensors (never synchronised to Python numbers).
  """

  def __init__(self, seed: int = 0, adam_impl: str = 'default'):
    """adam_impl: 'default' (PyTorch's choice: the per-tensor loop on CPU),
    'foreach' or 'fused'."""
    torch.manual_seed(seed)
    self.encoder = Encoder()
    self.g = [ImageGenerator(), FeatureGenerator()]
    self.d = [ImageDiscriminator(), FeatureDiscriminator()]
    for m in self.g + self.d:
      _init_gan(m)
    self.encoder_opt = _adam(self.encoder.parameters(), 1e-3, (0.9, 0.999),
                             adam_impl)
    self.g_opt = [_adam(m.parameters(), 1e-4, (0.5, 0.999), adam_impl)
                  for m in self.g]
    self.d_opt = [_adam(m.parameters(), 1e-4, (0.5, 0.999), adam_impl)
                  for m in self.d]
    for m in [self.encoder] + self.g + self.d:
      m.train()
    # E is frozen outside its own phase; `encoder_step` re-enables it.
    _requires_grad(self.encoder, False)

  def param_counts(self) -> dict[str, int]:
    return {'E': num_params(self.encoder),
            'G0': num_params(self.g[0]), 'D0': num_params(self.d[0]),
            'G1': num_params(self.g[1]), 'D1': num_params(self.d[1])}

  # -- pieces ------------------------------------------------------------

  @staticmethod
  def _images(images_u8):
    return images_u8.float().div_(255.0)

  def _real_levels(self, images_u8, labels):
    """[x, h1 = E_fc3(x), onehot(y)] with no gradient."""
    x = self._images(images_u8)
    with torch.no_grad():
      h1 = self.encoder.features(x)
    onehot = F.one_hot(labels, NUM_CLASSES).float()
    return [x, h1, onehot]

  def _z(self, n):
    return torch.rand(n, Z_DIM)

  def _d_loss(self, i, h_real, h_fake, z):
    """D_i's loss with real and fake in separate passes."""
    real_logits, _ = self.d[i](h_real)
    fake_logits, z_pred = self.d[i](h_fake)
    d_real = F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits))
    d_fake = F.binary_cross_entropy_with_logits(
        fake_logits, torch.zeros_like(fake_logits))
    adv = 0.5 * (d_real + d_fake)
    ent = F.mse_loss(z_pred, z)
    loss = adv + ENT_WEIGHT * ent
    with torch.no_grad():
      terms = {'d_adv': adv.detach(), 'd_ent': ent.detach(),
               'd_real_acc': (real_logits > 0).float().mean(),
               'd_fake_acc': (fake_logits < 0).float().mean(),
               'd_loss': loss.detach()}
    return loss, terms

  def _g_loss(self, i, h_fake, cond_target, z, labels):
    """G_i's loss on its output; D_i and E receive no gradient."""
    fake_logits, z_pred = self.d[i](h_fake)
    adv = F.binary_cross_entropy_with_logits(
        fake_logits, torch.ones_like(fake_logits))
    if i == 0:
      feats = self.encoder.features(h_fake)
      cond = F.mse_loss(feats, cond_target)
      with torch.no_grad():
        logits = self.encoder.logits(feats)
    else:
      logits = self.encoder.logits(h_fake)
      cond = F.cross_entropy(logits, cond_target)
    ent = F.mse_loss(z_pred, z)
    loss = adv + cond + ENT_WEIGHT * ent
    with torch.no_grad():
      terms = {'g_adv': adv.detach(), 'g_cond': cond.detach(),
               'g_ent': ent.detach(), 'g_loss': loss.detach(),
               'sample_acc': (logits.argmax(1) == labels).float().mean()}
    return loss, terms

  # -- phases ------------------------------------------------------------

  def encoder_step(self, images_u8, labels):
    _requires_grad(self.encoder, True)
    x = self._images(images_u8)
    logits = self.encoder(x)
    loss = F.cross_entropy(logits, labels)
    self.encoder_opt.zero_grad(set_to_none=True)
    loss.backward()
    self.encoder_opt.step()
    _requires_grad(self.encoder, False)
    with torch.no_grad():
      acc = (logits.argmax(1) == labels).float().mean()
    return {'loss': loss.detach(), 'train_acc': acc}

  def stack_step(self, i, images_u8, labels):
    """One independent iteration of stack i: one D_i, then one G_i update."""
    hs = self._real_levels(images_u8, labels)
    n = labels.shape[0]
    # D update.
    z = self._z(n)
    with torch.no_grad(), frozen_bn_stats(self.g[i]):
      h_fake = self.g[i](hs[i + 1], z)
    d_loss, d_terms = self._d_loss(i, hs[i], h_fake, z)
    self.d_opt[i].zero_grad(set_to_none=True)
    d_loss.backward()
    self.d_opt[i].step()
    # G update.
    z = self._z(n)
    target = labels if i == 1 else hs[i + 1]
    _requires_grad(self.d[i], False)
    h_fake = self.g[i](hs[i + 1], z)
    g_loss, g_terms = self._g_loss(i, h_fake, target, z, labels)
    self.g_opt[i].zero_grad(set_to_none=True)
    g_loss.backward()
    self.g_opt[i].step()
    _requires_grad(self.d[i], True)
    return {**d_terms, **g_terms}

  def _generate_all(self, onehot, n):
    z1, z0 = self._z(n), self._z(n)
    h1 = self.g[1](onehot, z1)
    x = self.g[0](h1.detach(), z0)   # joint_lower_weight 0
    return [(h1.detach(), x, z0), (onehot, h1, z1)]

  def joint_step(self, images_u8, labels):
    """One joint iteration: both D's, then both G's, fakes top-down."""
    x, h1, onehot = self._real_levels(images_u8, labels)
    n = labels.shape[0]
    # D update.
    with torch.no_grad(), frozen_bn_stats(self.g[0]), \
        frozen_bn_stats(self.g[1]):
      fake = self._generate_all(onehot, n)
    reals = [x, h1]
    d_total, terms = 0.0, {}
    for i in (0, 1):
      loss, t = self._d_loss(i, reals[i], fake[i][1], fake[i][2])
      d_total = d_total + loss
      terms.update({f'stack{i}/{k}': v for k, v in t.items()})
    for opt in self.d_opt:
      opt.zero_grad(set_to_none=True)
    d_total.backward()
    for opt in self.d_opt:
      opt.step()
    # G update.
    for d in self.d:
      _requires_grad(d, False)
    fake = self._generate_all(onehot, n)
    g_total = 0.0
    for i in (0, 1):
      cond, h_fake, z = fake[i]
      target = labels if i == 1 else cond
      loss, t = self._g_loss(i, h_fake, target, z, labels)
      g_total = g_total + loss
      terms.update({f'stack{i}/{k}': v for k, v in t.items()})
    for opt in self.g_opt:
      opt.zero_grad(set_to_none=True)
    g_total.backward()
    for opt in self.g_opt:
      opt.step()
    for d in self.d:
      _requires_grad(d, True)
    return terms

  def step_fn(self, phase: str):
    """(images_u8, labels) -> metrics for 'encoder', 'stack0', 'stack1' or
    'joint'."""
    if phase == 'encoder':
      return self.encoder_step
    if phase == 'joint':
      return self.joint_step
    if phase.startswith('stack'):
      i = int(phase[len('stack'):])
      return lambda images, labels: self.stack_step(i, images, labels)
    raise ValueError(f'unknown phase {phase!r}')
