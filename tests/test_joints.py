import numpy as np
import pytest
import scipy.io as sio

from utils import joints as J


def test_tables_are_permutations():
    for table in (J.RHD_TO_CANONICAL, J.STB_TO_CANONICAL, J.MANO_TO_CANONICAL,
                  J.MEDIAPIPE_TO_CANONICAL):
        assert sorted(table) == list(range(J.NUM_JOINTS))


def test_skeleton_structure():
    assert len(J.JOINT_NAMES) == 21 and len(J.BONES) == 20
    assert J.PARENTS[:6] == (-1, 0, 1, 2, 3, 0)
    assert J.FINGER_JOINTS["index"] == (5, 6, 7, 8)
    assert J.joint_finger(0) is None and J.joint_finger(20) == "pinky"
    assert J.joint_color_rgb(4) == J.FINGER_COLORS_RGB["thumb"]
    with pytest.raises(ValueError, match="joint id"):
        J.joint_finger(21)


def test_rhd_order_by_hand():
    # RHD thumb rows 1..4 are tip..MCP, so the canonical thumb (CMC..tip) reads rows 4..1.
    rhd = np.arange(21)
    canon = rhd[list(J.RHD_TO_CANONICAL)]
    assert canon[1:5].tolist() == [4, 3, 2, 1]
    assert canon[17:21].tolist() == [20, 19, 18, 17]


def test_stb_order_and_wrist():
    stb = np.arange(21)
    canon = stb[list(J.STB_TO_CANONICAL)]
    assert canon[1:5].tolist() == [17, 18, 19, 20]  # thumb, MCP -> tip
    assert canon[17:21].tolist() == [1, 2, 3, 4]  # pinky
    joints = np.zeros((21, 3))
    joints[0] = [0.0, 1.0, 0.0]  # palm centre
    joints[9] = [0.0, 2.0, 0.0]  # middle MCP
    wrist = J.stb_palm_to_wrist(joints)[0]
    np.testing.assert_allclose(wrist, [0.0, 2.0 - 2.2, 0.0])


def test_mano_order():
    mano = np.arange(21)
    canon = mano[list(J.MANO_TO_CANONICAL)]
    assert canon[5:9].tolist() == [1, 2, 3, 17]  # index joints then the index tip vertex
    assert canon[1:5].tolist() == [13, 14, 15, 16]  # thumb
    inverse = J.invert_order(J.MANO_TO_CANONICAL)
    np.testing.assert_array_equal(canon[list(inverse)], mano)


@pytest.mark.realdata
def test_rhd_real_fingers_run_outward(realdata):
    """After reordering, distance from the wrist grows along each finger in real RHD data."""
    mat = sio.loadmat(realdata / "RHD/RHD_published_v2/evaluation/anno_evaluation.mat")
    outward, outward_unordered = [], []
    for i in range(300):
        xyz = mat[f"frame{i}"][0, 0]["xyz"]
        for rows in (J.RHD_LEFT_ROWS, J.RHD_RIGHT_ROWS):
            for hand, out in ((xyz[rows][list(J.RHD_TO_CANONICAL)], outward),
                              (xyz[rows], outward_unordered)):
                dist = np.linalg.norm(hand - hand[0], axis=1)
                for base, second, _, tip in J.FINGER_JOINTS.values():
                    # A curled finger's tip can come back near the wrist, its base cannot.
                    out.append(dist[base] < dist[second] and dist[base] < dist[tip])
    assert np.mean(outward) > 0.8
    # The raw RHD order (tip first) fails the same check: the table does the work.
    assert np.mean(outward_unordered) < 0.3
