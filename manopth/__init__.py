"""The MANO hand model without chumpy, and 2D supervision/fitting through it.

    manopth.loader           load_mano (restricted unpickler), ManoModel, ManoFileError
    manopth.lbs              pure torch maths: batch_rodrigues, rot6d, blend shapes, lbs
    manopth.manolayer        ManoLayer -> ManoOutput(verts_m, joints_m, rot_mats)
    manopth.projection       perspective / weak-perspective projection, 2D keypoint loss
    manopth.fit              fit_mano_to_keypoints (pose, shape, rotation, translation)
    manopth.synthetic_model  a MANO-format synthetic hand for users and tests without MANO
    manopth.fit_rhd          CLI: fit one RHD frame and save an overlay
"""
