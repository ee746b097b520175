-- Argo CD health check for terrasnap's DatasetSnapshot and SnapshotStore (terrasnap.io/v1alpha1).
--
-- Reads only what the operator promises (docs/install.md): status.observedGeneration and metav1.Condition
-- entries `Ready` (always present once observed), `Reconciling` and `Stalled` (present only while true).
--   Healthy      Ready=True for the current generation
--   Degraded     Stalled=True, or Ready=False for the current generation (the data was rejected, the
--                store is unreachable after retries, the spec is invalid): a spec change is needed
--   Progressing  anything else: not yet observed, an older generation observed, a Job pending or running
-- The same rules as kstatus (Current / Failed / InProgress); tested on statuses recorded from real runs.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = obj.metadata.generation
local status = obj.status

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the terrasnap operator to observe the resource"
  return hs
end

if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the terrasnap operator to observe generation " .. tostring(generation) ..
    " (observed: " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = text(reconciling, "Reconciling")
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "Stalled")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and (ready.observedGeneration == nil or generation == nil or ready.observedGeneration == generation) then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = text(ready, "Ready")
    return hs
  end
  if ready.status == "False" then
    hs.status = "Degraded"
    hs.message = text(ready, "Not ready")
    return hs
  end
end

hs.status = "Progressing"
hs.message = text(ready, "Waiting for the Ready condition")
return hs
