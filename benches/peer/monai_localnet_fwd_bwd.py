# The peer side of `cargo bench -p voxreg-models --bench backbones -- local_net`: MONAI LocalNet
# forward + backward alone (no warp, loss or optimiser), as voxreg's
# `local_net/forward_backward_64` bench: loss = mean(ddf^2).
import time, torch
from monai.networks.nets import LocalNet
torch.manual_seed(0)
torch.set_num_threads(2)
net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=16, extract_levels=(0, 1, 2, 3))
x = torch.rand((1, 2, 64, 64, 64))
times = []
for i in range(7):
    t = time.perf_counter()
    net.zero_grad(set_to_none=True)
    loss = (net(x) ** 2).mean()
    loss.backward()
    times.append(time.perf_counter() - t)
times = sorted(times[2:])
print("monai localnet fwd+bwd median %.3f s min %.3f max %.3f" % (times[len(times)//2], times[0], times[-1]))
