"""The micro-VM: a VM built straight on /dev/kvm with a guest writer in
it whose every write the host can replay."""
