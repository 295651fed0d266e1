"""Skeleton definitions: partitions, groups as in the official DSTA code, flips."""
import pytest
import torch

from stattn.skeletons import COCO17, POSETRACK, Skeleton, normalize_groups


def test_posetrack_groups_follow_the_official_code():
    names = POSETRACK.joints
    named = [[names[i] for i in g] for g in POSETRACK.groups]
    assert named[0] == ["head_top", "nose", "head_bottom"]
    assert named[1] == ["left_shoulder", "left_elbow", "left_wrist"]
    assert named[2] == ["right_shoulder", "right_elbow", "right_wrist"]
    assert named[3] == ["left_hip", "left_knee", "left_ankle"]
    assert named[4] == ["right_hip", "right_knee", "right_ankle"]
    assert named[5:] == [["left_ear"], ["right_ear"]]
    assert len(POSETRACK.evaluated) == 15 and 3 not in POSETRACK.evaluated and 4 not in POSETRACK.evaluated


def test_coco_groups_are_unequal():
    assert sorted(COCO17.group_sizes) == [3, 3, 3, 3, 5]
    assert COCO17.max_group_size == 5


@pytest.mark.parametrize("skeleton", [POSETRACK, COCO17])
def test_partition_tables(skeleton):
    mask = skeleton.materialize()
    assert mask.shape == (17, 17) and torch.equal(mask, mask.T) and mask.diagonal().all()
    assert int(mask.sum()) == sum(s * s for s in skeleton.group_sizes)
    pos = skeleton.position_in_group()
    for g in skeleton.groups:
        assert pos[list(g)].tolist() == list(range(len(g)))


def test_flip_permutation_is_an_involution_swapping_left_and_right():
    perm = POSETRACK.flip_permutation()
    assert [perm[p] for p in perm] == list(range(17))
    for i, j in enumerate(perm):
        if i != j:
            assert POSETRACK.joints[i].replace("left", "right") == POSETRACK.joints[j] or POSETRACK.joints[
                i
            ].replace("right", "left") == POSETRACK.joints[j]


def test_bad_skeleton_definitions_raise():
    with pytest.raises(ValueError, match="appears in"):
        Skeleton("bad", ("a", "b"), ((0, 1), (1,)))
    with pytest.raises(ValueError, match="bad flip pair"):
        Skeleton("bad", ("a", "b"), ((0, 1),), flip_pairs=((0, 2),))
    with pytest.raises(ValueError, match="joint weights"):
        Skeleton("bad", ("a", "b"), ((0, 1),), joint_weights=(1.0,))


def test_normalize_groups_accepts_tensors_and_numpy_ints():
    np = pytest.importorskip("numpy")
    assert normalize_groups([torch.tensor([1, 0]), [np.int64(2)]], 3) == ((1, 0), (2,))
