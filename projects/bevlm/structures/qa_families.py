"""Question families of DriveLM-nuScenes v1.1 (the templates of docs/drivelm_spec.md section 2).

Every DriveLM question is an instance of a small number of templates. A *family* names one
template (slots such as the object c-tag, the direction or the object class are ignored), so
metrics can report accuracy per kind of question, e.g. ``'moving_status'`` or
``'safe_actions'``. Questions that match no known template get ``'other'``.

Multiple-choice versions of questions (the test set appends
``" Please select the correct answer from the following options: A. ..."``) are classified
like their open-ended originals.
"""
from __future__ import annotations

import re

#: One DriveLM c-tag ``<cN,CAM,x,y>``, e.g. ``<c1,CAM_BACK,1088.3,497.5>``.
#: Groups: index N, camera name, x, y (pixels of the 1600x900 camera image).
CTAG_RE = re.compile(r"<c(\d+),(CAM_[A-Z_]+),(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)>")

#: Placeholder that replaces every c-tag before template matching.
OBJ = "<OBJ>"

#: Suffix that the official ``convert_data.py`` appends to multiple-choice questions.
MC_SUFFIX = " Please select the correct answer from the following options:"

#: The option letters of the official multiple-choice questions.
MC_LETTERS = ("A", "B", "C", "D")

#: The option list as ``convert_data.py`` appends it (groups: the texts of options A-D).
MC_RE = re.compile(re.escape(MC_SUFFIX) + r" A\. (.+?) B\. (.+?) C\. (.+?) D\. (.+)$", re.S)


def split_multiple_choice(question: str) -> tuple[str, dict] | None:
    """``(stem, {letter: option text})`` of an official multiple-choice question, where the stem is
    the open-ended question the options answer (the text before :data:`MC_SUFFIX`); None when
    ``question`` carries no option list.

    >>> split_multiple_choice("Predict the behavior of the ego vehicle. Please select the correct answer "
    ...                       "from the following options: A. Go. B. Stop. C. Turn left. D. Turn right.")
    ('Predict the behavior of the ego vehicle.', {'A': 'Go.', 'B': 'Stop.', 'C': 'Turn left.', 'D': 'Turn right.'})
    """
    m = MC_RE.search(question)
    if m is None:
        return None
    return question[:m.start()], dict(zip(MC_LETTERS, m.groups()))

STAGES = ("perception", "prediction", "planning", "behavior")

_DIR = r"(?:front|front left|front right|back|back left|back right)"

# (family, regex over the normalised question); the first full match wins.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "perception": (
        ("are_there", rf"Are there .+ to the {_DIR} of the ego car\?"),
        ("status_in_direction", rf"What is the status of the .+ that (?:is|are) to the {_DIR} of the ego car\?"),
        ("objects_in_direction", rf"What are objects to the {_DIR} of the ego car\?"),
        ("visual_description", r"What is the visual description of <OBJ>\?"),
        ("observed_status", r"What is the observed status of object <OBJ>\?"),
        ("moving_status", r"What is the moving status of object <OBJ>\?"),
        ("describe_scene", r"Please describe the current scene\."),
        ("traffic_element_present", r"Is there any traffic element in the front view\?"),
        ("traffic_element_boxes", r"Identify all the traffic elements in the front view, .+"),
        ("important_objects", r"What are the important objects in the current scene\?.*"),
        ("relative_positions", r"What is the relative positioning of the important objects in the current scene\?"),
        ("lanes", r"Which lanes are each important object on in the scene\?"),
    ),
    "prediction": (
        ("except_ego_most_relevant",
         r"Except for the ego vehicle, what object would consider <OBJ> to be most relevant to its decision\?"),
        ("most_relevant", r"What object would consider <OBJ> to be most relevant to its decision\?"),
        ("traffic_sign_or_barrier", r"Is <OBJ> a traffic sign or a road barrier\?"),
        ("in_moving_direction", r"Would <OBJ> be in the moving direction of the ego vehicle\?"),
        ("in_object_moving_direction", r"Will <OBJ> be in the moving direction of <OBJ>\?"),
        ("future_state", r"What is the future state of <OBJ>\?"),
        ("occlusion", r"Which object is most likely to be occluded by <OBJ>\?.*"),
        ("are_traffic_signs", r"Are <OBJ> and <OBJ> traffic signs\?"),
        ("sign_meaning", r"What does <OBJ> mean\?"),
        ("most_likely_to_consider", r"In this scenario, what object is most likely to consider <OBJ>\?"),
        ("notice_order", r"What object should the ego vehicle notice first .+"),
        ("takes_into_account", r"Would <OBJ> take <OBJ> into account\?"),
        ("traffic_sign_kind", r"What kind of traffic sign is <OBJ>\?"),
        ("motion_change", r"Will <OBJ> change its motion state based on <OBJ>\?"),
        ("object_actions_reason",
         r"Based on the observations of <OBJ>, what are possible actions to be taken by <OBJ>\? What is the reason\?"),
    ),
    "planning": (
        ("should_consider", r"Is <OBJ> an object that the ego vehicle should consider in the current scene\?"),
        ("actions_based_on", r"What actions could the ego vehicle take based on <OBJ>\?.*"),
        ("collision_actions", r"What actions taken by the ego vehicle can lead to a collision with <OBJ>\?"),
        ("collision_probability", r"What is the probability of colliding with <OBJ> after the ego vehicle .+\?"),
        ("necessary_to_consider", r"Is it necessary for the ego vehicle to take <OBJ> into account\?"),
        ("most_possible_action",
         r"Based on <OBJ> in this scene, what is the most possible action of the ego vehicle\?"),
        ("traffic_signal", r"What is the traffic signal that the ego vehicle should pay attention to\?"),
        ("target_action", r"What is the target action of the ego vehicle\?"),
        ("safe_actions", r"In this scenario, what are safe actions to take for the ego vehicle\?"),
        ("dangerous_actions", r"In this scenario, what are dangerous actions to take for the ego vehicle\?"),
        ("priority", r"What is the priority of the objects that the ego vehicle should consider\?.*"),
        ("object_may_take", r"Based on the observation of <OBJ>, what actions may <OBJ> take\?"),
        ("scene_comment", r"What's your comment on this scene\?"),
        ("judgment_factors", r"What will affect driving judgment in this scene\?"),
        ("line_of_sight", r"Will .+ affect the driver's line of sight\?"),
    ),
    "behavior": (
        ("behavior", r"Predict the behavior of the ego vehicle\."),
    ),
}

_COMPILED = {stage: tuple((name, re.compile(pattern)) for name, pattern in templates)
             for stage, templates in _TEMPLATES.items()}

#: All family names, per stage, in template order (``'other'`` not included).
FAMILIES: dict[str, tuple[str, ...]] = {
    stage: tuple(name for name, _ in templates) for stage, templates in _TEMPLATES.items()}


def normalise_question(question: str) -> str:
    """Replace c-tags by ``<OBJ>`` and drop an appended multiple-choice option list.

    Args:
        question: a DriveLM question, possibly with c-tags and MC options.

    Returns:
        The question reduced to its template text, stripped of outer whitespace.
    """
    cut = question.find(MC_SUFFIX)
    if cut >= 0:
        question = question[:cut]
    return CTAG_RE.sub(OBJ, question).strip()


def classify_question(question: str, stage: str) -> str:
    """Family name of a DriveLM question (docs/drivelm_spec.md section 2).

    Args:
        question: the question text (c-tags verbatim; MC options may be appended).
        stage: 'perception' | 'prediction' | 'planning' | 'behavior' (the QA list it is in).

    Returns:
        A family name from :data:`FAMILIES` ``[stage]``, or ``'other'`` if no template matches.

    Raises:
        ValueError: ``stage`` is not one of the four DriveLM stages.
    """
    if stage not in _COMPILED:
        raise ValueError(f"classify_question: unknown stage {stage!r}. Fix: use one of {STAGES} "
                         f"(the key of the frame's 'QA' dict the question comes from)")
    text = normalise_question(question)
    for name, pattern in _COMPILED[stage]:
        if pattern.fullmatch(text):
            return name
    return "other"


def question_family(question: str) -> str:
    """Family of a question whose stage is not known: the first stage (in :data:`STAGES` order)
    with a matching template, or ``'other'``.

    >>> question_family("What are the important objects in the current scene? Those objects will be considered.")
    'important_objects'
    >>> question_family("Q: Is it raining?")
    'other'
    """
    for stage in STAGES:
        family = classify_question(question, stage)
        if family != "other":
            return family
    return "other"
