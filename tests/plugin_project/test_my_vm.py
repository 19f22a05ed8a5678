"""Someone else's KVM tests, written only with kvmharness's pytest plugin:
its fixtures and markers, no conftest, no helpers of ours."""

import pytest


@pytest.mark.kvm
@pytest.mark.micro_vm(mem=128 << 20, wps=500_000, seed=7)
def test_bitmap_counts_what_the_guest_wrote(micro_vm, dirty_rate):
    result, check = dirty_rate(micro_vm, "dirty-bitmap", ms=200)
    assert check.narrow <= result.dirty_pages <= check.wide
    assert result.guest_writes > 0


@pytest.mark.kvm
@pytest.mark.micro_vm(mem=128 << 20, vcpus=2, dirty_ring_entries=4096, wps=200_000)
def test_each_vcpu_has_its_own_ring_count(micro_vm, dirty_rate):
    result, check = dirty_rate(micro_vm, "dirty-ring", ms=300)
    assert len(result.vcpus) == 2
    for counted, narrow, wide in check.per_vcpu:
        assert narrow <= counted <= wide


@pytest.mark.kvm
@pytest.mark.parametrize("micro_vm", [{"pattern": "sequential"}, {"pattern": "zipf:0.99"}], indirect=True)
def test_sampling_estimates_near_the_truth(micro_vm, dirty_rate):
    result, check = dirty_rate(micro_vm, "page-sampling", ms=500)
    low, high = result.confidence
    assert low <= high and check.truth > 0
