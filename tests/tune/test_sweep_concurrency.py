"""How many trials a sweep runs at once (no Ray started): never more than the cluster
holds, unless an autoscaler can add nodes for them."""

import pytest

from finegym_ray.tune.config import SweepConfig, TrialResources
from finegym_ray.tune.sweep import concurrent_trials


def _sweep(max_concurrent: int, **resources) -> SweepConfig:
    return SweepConfig(name="s", space={"lr": {"grid": [0.1, 0.2, 0.3, 0.4]}},
                       max_concurrent_trials=max_concurrent, resources=TrialResources(**resources))


@pytest.mark.parametrize(("cluster", "resources", "fit"), [
    ({"CPU": 2.0}, {}, 1),  # a 1-CPU worker and a CPU for its input
    ({"CPU": 16.0}, {}, 8),
    ({"CPU": 16.0}, {"workers": 2, "cpus_per_worker": 2.0}, 3),
    ({"CPU": 16.0, "GPU": 1.0}, {"gpus_per_worker": 0.25}, 4),  # the GPU is the limit
])
def test_by_default_as_many_trials_as_the_cluster_holds(cluster, resources, fit):
    assert concurrent_trials(_sweep(0, **resources), cluster) == fit


def test_more_trials_at_once_than_fit_are_capped_on_a_fixed_cluster():
    # Four 1-CPU trials on 2 CPUs: two trials' workers took both CPUs and neither
    # trial's input pipeline could start, forever.
    assert concurrent_trials(_sweep(4), {"CPU": 2.0}) == 1
    assert concurrent_trials(_sweep(4), {"CPU": 6.0}) == 3
    assert concurrent_trials(_sweep(2), {"CPU": 16.0}) == 2  # fewer than fit: as asked


def test_an_autoscaling_cluster_gets_what_was_asked():
    assert concurrent_trials(_sweep(4), {"CPU": 2.0}, autoscaling=True) == 4
