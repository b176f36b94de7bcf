# CaffeNet (as src/model/backbone/caffenet.rs) one training iteration, fp32, channels-last, batch
# 128 + 128: lambda 0.8 (both branches with autograd) against lambda 0 (target under no_grad).
import time, torch, torch.nn as nn, torch.nn.functional as F, statistics, sys
torch.set_num_threads(2); torch.manual_seed(0)
def lrn(x):
    sq = x.square().unsqueeze(1)
    mean = F.avg_pool3d(F.pad(sq, (0, 0, 0, 0, 2, 2)), (5, 1, 1), (1, 1, 1), 0, False, True).squeeze(1)
    return x / (mean * 1e-4 + 1.0).pow(0.75)
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.ModuleList([nn.Conv2d(3,96,11,4,0), nn.Conv2d(96,256,5,1,2,groups=2), nn.Conv2d(256,384,3,1,1),
                             nn.Conv2d(384,384,3,1,1,groups=2), nn.Conv2d(384,256,3,1,1,groups=2)])
        s.fc6, s.fc7, s.fc8 = nn.Linear(9216, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 10)
    def forward(s, x):
        pool = lambda x: F.max_pool2d(x, 3, 2, 0, 1, True)
        x = lrn(pool(s.c[0](x).relu())); x = lrn(pool(s.c[1](x).relu()))
        x = s.c[2](x).relu(); x = s.c[3](x).relu(); x = pool(s.c[4](x).relu()).flatten(1)
        x = F.dropout(s.fc6(x).relu(), 0.5, True); x = F.dropout(s.fc7(x).relu(), 0.5, True)
        return s.fc8(x)
def coral(a, b):
    d = a.shape[1]
    cov = lambda x: ((x - x.mean(0)).T @ (x - x.mean(0))) / (x.shape[0] - 1)
    return ((cov(a) - cov(b)) ** 2).sum() / (4 * d * d)
net = Net().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
xs = torch.randn(128, 3, 227, 227).contiguous(memory_format=torch.channels_last)
xt = torch.randn(128, 3, 227, 227).contiguous(memory_format=torch.channels_last)
ys = torch.randint(0, 10, (128,))
for lam in (0.8, 0.0, 0.8, 0.0):
    times = []
    for it in range(4):
        t = time.perf_counter()
        fs = net(xs)
        if lam > 0: ft = net(xt)
        else:
            with torch.no_grad(): ft = net(xt)
        loss = F.cross_entropy(fs, ys) + lam * coral(fs, ft)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    print(f"lambda {lam}: {statistics.median(times[1:]):.2f} s/iter", flush=True)
